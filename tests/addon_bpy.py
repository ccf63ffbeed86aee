"""Helpers for the scripts the add-on tests run *inside* a bpy subprocess (never imported by pytest).

A script does ``sys.path.insert(0, TESTS); from addon_bpy import *``, drives Blender, and ends with
``emit(...)``: one ``ADDON_RESULT {json}`` line the test parses.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import sys

import bpy

EXTENSION = "kprcan_denoiser"
MODULE = f"bl_ext.user_default.{EXTENSION}"


def build_scene(samples: int = 4, frames: int = 1) -> None:
    """64x48 Cycles scene: diffuse floor, glossy sphere (animated over ``frames``), area light.

    Built in the current file (not read_factory_settings, which would also reset the preferences and so
    disable the extension).
    """
    for collection in (bpy.data.objects, bpy.data.meshes, bpy.data.lights, bpy.data.cameras,
                       bpy.data.materials):
        for block in list(collection):
            collection.remove(block)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.seed = 3
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 64, 48, 100
    bpy.ops.mesh.primitive_plane_add(size=10)
    bpy.ops.mesh.primitive_uv_sphere_add(radius=1, location=(0, 0, 1))
    sphere = bpy.context.object
    material = bpy.data.materials.new("glossy red")
    material.use_nodes = True
    bsdf = material.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Roughness"].default_value = 0.25
    bsdf.inputs["Base Color"].default_value = (0.8, 0.25, 0.2, 1.0)
    sphere.data.materials.append(material)
    bpy.ops.object.light_add(type="AREA", location=(2, -2, 4))
    bpy.context.object.data.energy = 300
    bpy.ops.object.camera_add(location=(0, -6, 2.5), rotation=(math.radians(70), 0, 0))
    scene.camera = bpy.context.object
    scene.frame_start, scene.frame_end = 1, frames
    if frames > 1:
        sphere.location.x = -0.5
        sphere.keyframe_insert("location", frame=1)
        sphere.location.x = 0.5
        sphere.keyframe_insert("location", frame=frames)


def extension_site_packages() -> str:
    return os.path.join(bpy.utils.user_resource("EXTENSIONS"), ".local", "lib",
                        f"python{sys.version_info[0]}.{sys.version_info[1]}", "site-packages")


def install(zip_path: str) -> str:
    """Install and enable the extension zip in the (temporary) user folder; returns its module name.

    Real Blender puts the extension's wheel folder before its own site-packages; pip bpy in a venv puts
    the venv first, so the folder is moved to the front here: the test then runs the bundled wheels.
    """
    result = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                                      enable_on_install=False)
    assert result == {"FINISHED"}, result
    bpy.ops.preferences.addon_enable(module=MODULE)  # extracts the wheels, then registers
    site = extension_site_packages()
    sys.path.insert(0, site)
    sys.path_importer_cache.pop(site, None)
    importlib.invalidate_caches()
    return MODULE


def install_checkout(addon_dir: str) -> str:
    """Enable the add-on straight from a checkout's ``blender_addon/``, linked into the user extensions
    repository (docs/blender.md, Development): no zip to build, and it runs the checkout's denoiser_core
    with this Python's onnxruntime and OpenEXR. Returns its module name."""
    repository = os.path.join(bpy.utils.user_resource("EXTENSIONS"), "user_default")
    os.makedirs(repository, exist_ok=True)
    link = os.path.join(repository, EXTENSION)
    if not os.path.islink(link):
        os.symlink(addon_dir, link)
    bpy.ops.preferences.addon_enable(module=MODULE)
    return MODULE


def disable() -> None:
    """Disable the extension (must happen before exit: pip bpy hangs on exit with Python handlers left)."""
    if MODULE in bpy.context.preferences.addons:
        bpy.ops.preferences.addon_disable(module=MODULE)


def preferences():
    return bpy.context.preferences.addons[MODULE].preferences


def leftovers() -> dict:
    """What the add-on could have left behind in Blender: handlers, scene property, timers, classes."""
    handlers = {name: [f.__module__ for f in getattr(bpy.app.handlers, name)
                       if "kprcan" in (f.__module__ or "")]
                for name in ("render_init", "render_write", "render_complete", "render_cancel", "load_post")}
    return {
        "handlers": {k: v for k, v in handlers.items() if v},
        "scene_property": hasattr(bpy.types.Scene, "kprcan"),
        "operators": [op for op in dir(bpy.ops.kprcan) if not op.startswith("_")]
        if hasattr(bpy.ops, "kprcan") else [],
        "panel": hasattr(bpy.types, "KPRCAN_PT_render"),
        "core_loaded": "denoiser_core" in sys.modules,
    }


def emit(**data) -> None:
    print("ADDON_RESULT " + json.dumps(data, default=str), flush=True)
