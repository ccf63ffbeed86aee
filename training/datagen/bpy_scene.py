"""Build a Cycles scene from a JSON scene spec (runs inside a bpy process only).

The spec format is documented in docs/data.md and produced by training.datagen.scenes.
"""

from __future__ import annotations

import blender_compat
import bpy
from bpy_materials import make_material
from mathutils import Vector

PRIMITIVES = {
    "plane": lambda: bpy.ops.mesh.primitive_plane_add(size=2.0),
    "cube": lambda: bpy.ops.mesh.primitive_cube_add(size=2.0),
    "uv_sphere": lambda: bpy.ops.mesh.primitive_uv_sphere_add(radius=1.0, segments=48, ring_count=24),
    "ico_sphere": lambda: bpy.ops.mesh.primitive_ico_sphere_add(radius=1.0, subdivisions=2),
    "cylinder": lambda: bpy.ops.mesh.primitive_cylinder_add(radius=1.0, depth=2.0, vertices=48),
    "cone": lambda: bpy.ops.mesh.primitive_cone_add(radius1=1.0, depth=2.0, vertices=48),
    "torus": lambda: bpy.ops.mesh.primitive_torus_add(major_radius=1.0, minor_radius=0.3),
    "monkey": lambda: bpy.ops.mesh.primitive_monkey_add(size=2.0),
    "grid": lambda: bpy.ops.mesh.primitive_grid_add(x_subdivisions=12, y_subdivisions=12, size=2.0),
}


def reset_scene():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    return scene


def point_at(obj, target) -> None:
    direction = Vector(target) - obj.location
    obj.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()


def add_object(index: int, spec: dict):
    PRIMITIVES[spec["mesh"]]()
    obj = bpy.context.active_object
    obj.name = f"obj{index}_{spec['mesh']}"
    obj.location = spec.get("location", (0, 0, 0))
    obj.rotation_euler = spec.get("rotation", (0, 0, 0))
    obj.scale = spec.get("scale", (1, 1, 1))
    if spec.get("smooth"):
        for poly in obj.data.polygons:
            poly.use_smooth = True
    for mod_index, mod in enumerate(spec.get("modifiers", [])):
        kind = mod["type"]
        m = obj.modifiers.new(f"m{mod_index}", kind)
        if kind == "WIREFRAME":
            m.thickness = float(mod.get("thickness", 0.02))
        elif kind == "ARRAY":
            m.count = int(mod.get("count", 5))
            m.relative_offset_displace = mod.get("offset", (1.2, 0, 0))
        elif kind == "SUBSURF":
            m.levels = m.render_levels = int(mod.get("levels", 2))
        elif kind == "BEVEL":
            m.width = float(mod.get("width", 0.05))
            m.segments = int(mod.get("segments", 3))
        elif kind == "DISPLACE":
            tex = bpy.data.textures.new(f"disp{index}", "CLOUDS")
            tex.noise_scale = float(mod.get("noise_scale", 0.5))
            m.texture = tex
            m.strength = float(mod.get("strength", 0.2))
    if "material" in spec:
        obj.data.materials.append(make_material(f"mat{index}", spec["material"]))
    if spec.get("hair"):
        add_hair(obj, index, spec["hair"])
    if spec.get("motion"):
        add_motion(obj, spec["motion"])
    return obj


def add_hair(obj, index: int, hair: dict) -> None:
    mod = obj.modifiers.new(f"hair{index}", "PARTICLE_SYSTEM")
    settings = mod.particle_system.settings
    settings.type = "HAIR"
    settings.count = int(hair.get("count", 500))
    settings.hair_length = float(hair.get("length", 0.3))
    settings.root_radius = float(hair.get("radius", 0.5))
    settings.radius_scale = float(hair.get("radius_scale", 0.01))
    settings.use_advanced_hair = True
    settings.brownian_factor = float(hair.get("brownian", 0.02))
    mod.particle_system.seed = int(hair.get("seed", 0))
    if "material" in hair:
        obj.data.materials.append(make_material(f"hairmat{index}", hair["material"]))
        settings.material = len(obj.data.materials)


def add_motion(obj, motion: dict) -> None:
    """Two keyframes one frame apart; motion blur integrates the shutter around frame 1."""
    obj.keyframe_insert("location", frame=1)
    obj.keyframe_insert("rotation_euler", frame=1)
    obj.location = Vector(obj.location) + Vector(motion.get("location_delta", (0, 0, 0)))
    obj.rotation_euler = [a + b for a, b in zip(obj.rotation_euler, motion.get("rotation_delta", (0, 0, 0)),
                                                   strict=True)]
    obj.keyframe_insert("location", frame=2)
    obj.keyframe_insert("rotation_euler", frame=2)


def add_light(index: int, spec: dict) -> None:
    kind = spec["type"]
    data = bpy.data.lights.new(f"light{index}", kind)
    data.color = spec.get("color", (1, 1, 1))
    data.energy = float(spec["energy"])
    if kind == "AREA":
        data.shape = spec.get("shape", "RECTANGLE")
        data.size = float(spec.get("size", 1.0))
        data.size_y = float(spec.get("size_y", spec.get("size", 1.0)))
    elif kind in ("POINT", "SPOT"):
        data.shadow_soft_size = float(spec.get("size", 0.1))
        if kind == "SPOT":
            data.spot_size = float(spec.get("spot_size", 0.8))
            data.spot_blend = float(spec.get("spot_blend", 0.2))
    elif kind == "SUN":
        data.angle = float(spec.get("angle", 0.01))
    obj = bpy.data.objects.new(f"light{index}", data)
    bpy.context.scene.collection.objects.link(obj)
    obj.location = spec.get("location", (0, 0, 5))
    if "target" in spec:
        point_at(obj, spec["target"])
    elif "rotation" in spec:
        obj.rotation_euler = spec["rotation"]


def setup_world(scene, spec: dict) -> None:
    world = bpy.data.worlds.new("world")
    scene.world = world
    world.use_nodes = True
    nodes, links = world.node_tree.nodes, world.node_tree.links
    nodes.clear()
    output = nodes.new("ShaderNodeOutputWorld")
    background = nodes.new("ShaderNodeBackground")
    background.inputs["Strength"].default_value = float(spec.get("strength", 1.0))
    links.new(background.outputs["Background"], output.inputs["Surface"])
    kind = spec.get("type", "color")
    if kind != "color":
        # a coarser importance map than the default 1024: seconds less sync time per render, same result
        world.cycles.sampling_method = "MANUAL"
        world.cycles.sample_map_resolution = 256
    if kind == "color":
        background.inputs["Color"].default_value = (*spec.get("color", (0.05, 0.05, 0.05)), 1.0)
    elif kind == "sky":
        sky = nodes.new("ShaderNodeTexSky")
        blender_compat.set_sky_texture(sky, float(spec["sun_elevation"]), float(spec["sun_rotation"]),
                                       air=float(spec.get("air", 1.0)), dust=float(spec.get("dust", 1.0)))
        links.new(sky.outputs["Color"], background.inputs["Color"])
    elif kind == "gradient":
        # horizon -> zenith blend on the view direction's z
        coords = nodes.new("ShaderNodeTexCoord")
        separate = nodes.new("ShaderNodeSeparateXYZ")
        ramp = nodes.new("ShaderNodeValToRGB")
        ramp.color_ramp.elements[0].color = (*spec["horizon"], 1.0)
        ramp.color_ramp.elements[1].color = (*spec["zenith"], 1.0)
        links.new(coords.outputs["Generated"], separate.inputs["Vector"])
        links.new(separate.outputs["Z"], ramp.inputs["Fac"])
        links.new(ramp.outputs["Color"], background.inputs["Color"])
    else:
        raise ValueError(f"unknown world type {kind!r}")


def setup_camera(scene, spec: dict) -> None:
    data = bpy.data.cameras.new("camera")
    data.lens = float(spec.get("lens", 35.0))
    data.sensor_width = 36.0
    if spec.get("dof"):
        data.dof.use_dof = True
        data.dof.focus_distance = float(spec["dof"]["distance"])
        data.dof.aperture_fstop = float(spec["dof"]["fstop"])
    cam = bpy.data.objects.new("camera", data)
    scene.collection.objects.link(cam)
    cam.location = spec["location"]
    point_at(cam, spec["target"])
    if spec.get("motion"):
        add_motion(cam, spec["motion"])
    scene.camera = cam


def build_scene(spec: dict):
    """A fresh scene holding everything in ``spec`` (see module docstring)."""
    scene = reset_scene()
    scene.render.resolution_x, scene.render.resolution_y = spec["resolution"]
    scene.render.resolution_percentage = 100
    setup_world(scene, spec.get("world", {}))
    setup_camera(scene, spec["camera"])
    for index, light in enumerate(spec.get("lights", [])):
        add_light(index, light)
    for index, obj in enumerate(spec.get("objects", [])):
        add_object(index, obj)
    scene.frame_set(1)
    motion = spec.get("motion_blur")
    scene.render.use_motion_blur = bool(motion)
    if motion:
        scene.render.motion_blur_shutter = float(motion.get("shutter", 0.5))
    return scene


def configure_cycles(scene, samples: int, seed: int, threads: int = 0, max_bounces: int = 12) -> None:
    """Plain path tracing: fixed sample count, no adaptive sampling, no denoiser, no clamping."""
    cycles = scene.cycles
    cycles.device = "CPU"
    cycles.samples = int(samples)
    cycles.seed = int(seed)
    cycles.use_animated_seed = False
    cycles.use_adaptive_sampling = False
    cycles.use_denoising = False
    cycles.use_light_tree = True
    cycles.sample_clamp_direct = 0.0
    cycles.sample_clamp_indirect = 0.0
    cycles.max_bounces = max_bounces
    cycles.transmission_bounces = max_bounces
    cycles.volume_bounces = 2
    cycles.caustics_reflective = True
    cycles.caustics_refractive = True
    cycles.blur_glossy = 0.0
    scene.render.use_compositing = False
    scene.render.use_sequencer = False
    scene.render.threads_mode = "FIXED" if threads else "AUTO"
    if threads:
        scene.render.threads = threads
    scene.view_settings.view_transform = "Standard"
    blender_compat.enable_denoiser_passes(scene.view_layers[0])
    blender_compat.set_multilayer_exr(scene.render.image_settings)


def apply_camera_jitter(scene, jitter: dict) -> None:
    """Small deterministic camera move for variations of a user .blend (metres / radians)."""
    cam = scene.camera
    cam.location = Vector(cam.location) + Vector(jitter.get("offset", (0, 0, 0)))
    rot = jitter.get("rotation", (0, 0, 0))
    cam.rotation_euler = [a + b for a, b in zip(cam.rotation_euler, rot, strict=True)]
    if jitter.get("lens_scale") and cam.data.type == "PERSP":
        cam.data.lens *= float(jitter["lens_scale"])
