"""Scene kinds composed from the building blocks in scenes.py. Entry point: ``make_scene``."""

from __future__ import annotations

import math
import random

from training.datagen.scenes import (
    KINDS,
    STRESS_KINDS,
    _color,
    _r,
    _vec,
    camera,
    hair_object,
    local_light,
    make_material,
    make_object,
    sky_world,
    sun,
    thin_geometry,
)


def _box(location, scale, material) -> dict:
    return {"mesh": "cube", "location": _vec(*location), "scale": _vec(*scale), "material": material}


def _floor(rng: random.Random, size: float = 30.0) -> dict:
    return {"mesh": "plane", "scale": _vec(size, size, 1), "material": make_material(
        rng, rng.choice(["diffuse", "diffuse", "plastic", "coated"]))}


def interior(rng: random.Random) -> dict:
    """A closed room lit mostly indirectly: sun and sky through a window opening, maybe a lamp."""
    w, d, h, t = rng.uniform(4, 8), rng.uniform(4, 8), rng.uniform(2.6, 3.6), 0.1
    wall = make_material(rng, "diffuse")
    objects = [_floor(rng, max(w, d)), _box((0, 0, h + t), (w / 2, d / 2, t), wall),
               _box((-w / 2 - t, 0, h / 2), (t, d / 2, h / 2), wall),
               _box((w / 2 + t, 0, h / 2), (t, d / 2, h / 2), wall),
               _box((0, -d / 2 - t, h / 2), (w / 2, t, h / 2), wall)]
    # back wall (+y) with a window: four boxes around the opening
    ww, wh, wz = rng.uniform(0.8, w * 0.6), rng.uniform(0.8, h * 0.6), rng.uniform(0.6, 1.2)
    wx = rng.uniform(-w / 2 + ww / 2 + 0.2, w / 2 - ww / 2 - 0.2)
    y = d / 2 + t
    objects += [_box((wx, y, wz / 2), (ww / 2, t, wz / 2), wall),
                _box((wx, y, (wz + wh + h) / 2), (ww / 2, t, (h - wz - wh) / 2), wall),
                _box(((-w / 2 + wx - ww / 2) / 2, y, h / 2), ((wx - ww / 2 + w / 2) / 2, t, h / 2), wall),
                _box(((w / 2 + wx + ww / 2) / 2, y, h / 2), ((w / 2 - wx - ww / 2) / 2, t, h / 2), wall)]
    for _ in range(rng.randint(3, 7)):
        objects.append(make_object(rng, (0, 0), min(w, d) / 3, size=(0.2, 0.6)))
    elevation = rng.uniform(0.15, 0.8)
    # the sun shines in through the window (+y side), from somewhere in front of it
    lights = [sun(rng, elevation, math.pi / 2 + rng.uniform(-0.7, 0.7), rng.uniform(2, 8))]
    if rng.random() < 0.4:
        lamp = local_light(rng, [0, 0, 0], 1.0)
        lamp["location"][2] = _r(h - 0.3)
        lights.append(lamp)
    target = _vec(rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.3, 1.2))
    cam = camera(rng, target, (1.5, min(w, d) / 2 - 0.2), (0.8, h - 0.4))
    return {"world": sky_world(rng, elevation), "lights": lights, "objects": objects, "camera": cam}


def exterior(rng: random.Random) -> dict:
    elevation = rng.uniform(0.05, 1.2)
    objects = [_floor(rng, 60)] + [make_object(rng, (0, 0), 3.0, size=(0.3, 1.2))
                                   for _ in range(rng.randint(4, 10))]
    lights = [sun(rng, elevation, rng.uniform(0, 2 * math.pi), rng.uniform(2, 6))]
    cam = camera(rng, _vec(0, 0, rng.uniform(0.3, 1.0)), (4, 9), (0.5, 4))
    return {"world": sky_world(rng, elevation), "lights": lights, "objects": objects, "camera": cam}


def studio(rng: random.Random) -> dict:
    objects = [_floor(rng, 20)] + [make_object(rng, (0, 0), 1.8) for _ in range(rng.randint(3, 6))]
    lights = [local_light(rng, [0, 0, 0.5], 3.0) for _ in range(rng.randint(1, 3))]
    world = {"type": "color", "color": _color(rng, 0.0, 0.3), "strength": _r(rng.uniform(0.0, 1.0))}
    cam = camera(rng, _vec(0, 0, 0.6), (4, 8), (0.8, 4))
    return {"world": world, "lights": lights, "objects": objects, "camera": cam}


def caustics(rng: random.Random) -> dict:
    objects = [_floor(rng, 20)]
    objects += [make_object(rng, (0, 0), 1.2, size=(0.3, 0.8), material=make_material(rng, "glass"))
                for _ in range(rng.randint(2, 4))]
    objects += [make_object(rng, (0, 0), 2.0, size=(0.2, 0.6), material=make_material(rng, "metal"))
                for _ in range(rng.randint(0, 2))]
    light = local_light(rng, [0, 0, 0], 1.5)
    light.update(type=rng.choice(["POINT", "SPOT"]), size=_r(rng.uniform(0.01, 0.1)),
                 energy=_r(rng.uniform(300, 1500)), spot_size=1.2)
    world = {"type": "color", "color": _color(rng, 0.0, 0.2), "strength": _r(rng.uniform(0.0, 0.5))}
    cam = camera(rng, _vec(0, 0, 0.4), (3, 6), (1.0, 4))
    return {"world": world, "lights": [light], "objects": objects, "camera": cam}


def volume(rng: random.Random) -> dict:
    scene = studio(rng)
    if rng.random() < 0.5:  # fog filling the whole set (camera inside), lit by a spot
        scene["objects"].append({"mesh": "cube", "location": _vec(0, 0, 4), "scale": _vec(12, 12, 4),
                                 "material": {"volume": {"density": _r(rng.uniform(0.01, 0.12)),
                                                         "color": _color(rng, 0.7, 1.0),
                                                         "anisotropy": _r(rng.uniform(-0.3, 0.7))}}})
        spot = local_light(rng, [0, 0, 0], 2.0)
        spot.update(type="SPOT", spot_size=_r(rng.uniform(0.3, 0.9)), energy=_r(rng.uniform(500, 3000)))
        scene["lights"].append(spot)
    else:  # a smoke-like cube: density from a noise texture
        s = rng.uniform(0.6, 1.5)
        scene["objects"].append({"mesh": "cube", "location": _vec(rng.uniform(-1, 1), rng.uniform(-1, 1), s),
                                 "scale": _vec(s, s, s), "material": {"volume": {
                                     "density": _r(rng.uniform(0.5, 4)), "color": _color(rng, 0.5, 1.0),
                                     "noise_density": True, "noise_scale": _r(rng.uniform(1, 5))}}})
    return scene


def closeup(rng: random.Random) -> dict:
    """Few objects filling the frame: textures, bump and normal maps, often depth of field."""
    scene = studio(rng)
    for obj in scene["objects"][1:]:
        obj["material"]["texture"] = {"type": rng.choice(["noise", "voronoi", "checker", "wave", "brick",
                                                          "image"]),
                                      "scale": _r(rng.uniform(5, 80)), "seed": rng.randrange(10**6),
                                      "color2": _color(rng), "color1": _color(rng)}
    scene["camera"] = camera(rng, _vec(0, 0, 0.6), (1.5, 3.5), (0.5, 2))
    if rng.random() < 0.5:
        scene["camera"]["dof"] = {"distance": _r(rng.uniform(1.5, 3.0)), "fstop": _r(rng.uniform(0.5, 2.8))}
    return scene


def fog(rng: random.Random) -> dict:
    """Dense fog filling the set, a light shaft between pillars: the floor and pillars are seen through
    the fog, so their colour passes carry its per-sample transmittance (noisy Diffuse / Glossy Color)."""
    scene = studio(rng)
    for x in (-1.2, 1.2):
        scene["objects"].append(_box((x, rng.uniform(-0.5, 0.5), 1.5), (0.25, 0.25, 1.5),
                                     make_material(rng, "diffuse")))
    scene["objects"].append({"mesh": "cube", "location": _vec(0, 0, 4), "scale": _vec(12, 12, 4),
                             "material": {"volume": {"density": _r(rng.uniform(0.15, 0.4)),
                                                     "color": _color(rng, 0.8, 1.0),
                                                     "anisotropy": _r(rng.uniform(0.0, 0.6))}}})
    scene["lights"].append({"type": "SPOT", "location": _vec(rng.uniform(-0.5, 0.5), 2.5, 5.5),
                            "target": [0, 0, 0], "energy": _r(rng.uniform(2000, 6000)),
                            "size": 0.05, "spot_size": _r(rng.uniform(0.3, 0.6)), "spot_blend": 0.2})
    return scene


def dof(rng: random.Random) -> dict:
    """A close-up with strong depth of field (always on, wide open)."""
    scene = closeup(rng)
    scene["camera"]["dof"] = {"distance": _r(rng.uniform(1.5, 3.0)), "fstop": _r(rng.uniform(0.4, 1.2))}
    return scene


def glass(rng: random.Random) -> dict:
    """An open-fronted box room (Cornell-like: coloured side walls, a light under the ceiling) holding glass
    spheres and diffuse boxes: caustics, refracted speckle inside the glass, dim indirectly lit walls."""
    w, d, h = rng.uniform(2.0, 3.0), rng.uniform(2.0, 3.0), rng.uniform(2.0, 2.8)
    t = 0.05
    white, left, right = (make_material(rng, "diffuse") for _ in range(3))
    white.update(base_color=_color(rng, 0.6, 0.85))
    left.update(base_color=_vec(rng.uniform(0.4, 0.8), rng.uniform(0.02, 0.15), rng.uniform(0.02, 0.15)))
    right.update(base_color=_vec(rng.uniform(0.02, 0.15), rng.uniform(0.3, 0.7), rng.uniform(0.02, 0.2)))
    for material in (white, left, right):  # plain walls: the blotches to avoid show on flat colour
        material.pop("texture", None)
        material.pop("bump", None)
        material.pop("normal_map", None)
    objects = [_box((0, 0, -t), (w / 2, d / 2, t), white), _box((0, 0, h + t), (w / 2, d / 2, t), white),
               _box((0, d / 2 + t, h / 2), (w / 2, t, h / 2), white),
               _box((-w / 2 - t, 0, h / 2), (t, d / 2, h / 2), left),
               _box((w / 2 + t, 0, h / 2), (t, d / 2, h / 2), right)]
    # one prop per slot (two rows of two), so that no box swallows a sphere: glass first
    slots = [(x * w / 4, y) for y in (-d / 5, d / 4) for x in (-1, 1)]
    rng.shuffle(slots)
    spheres, boxes = rng.randint(1, 2), rng.randint(0, 2)
    for x, y in slots[:spheres]:
        s = rng.uniform(0.25, 0.42)
        objects.append({"mesh": "uv_sphere", "scale": _vec(s, s, s), "smooth": True, "modifiers": [],
                        "location": _vec(x, y, s), "rotation": _vec(0, 0, 0),
                        "material": make_material(rng, "glass")})
    for x, y in slots[spheres:spheres + boxes]:
        s = rng.uniform(0.18, 0.32)
        objects.append(_box((x, y, s), (s, s, s), make_material(rng, "diffuse")))
    light = {"type": "AREA", "location": _vec(0, 0, h - 0.02), "target": [0, 0, 0],
             "color": _vec(1, 0.85, 0.7), "energy": _r(rng.uniform(60, 250)),
             "size": _r(rng.uniform(0.3, 0.8)), "size_y": _r(rng.uniform(0.3, 0.8))}
    cam = {"location": _vec(rng.uniform(-0.2, 0.2), -d / 2 - rng.uniform(2.5, 4.0),
                            h / 2 + rng.uniform(-0.2, 0.2)),
           "target": _vec(0, 0, h / 2 - 0.1), "lens": _r(rng.uniform(30, 45))}
    world = {"type": "color", "color": _vec(0, 0, 0), "strength": 0.0}
    return {"world": world, "lights": [light], "objects": objects, "camera": cam}


def glossy(rng: random.Random) -> dict:
    """A night street: a wet, rough-glossy floor reflecting emissive neon tubes and lit facades, a dark
    sky. Glossy light (Glossy Direct/Indirect) is most of the image, blurred by the floor's roughness."""
    floor = make_material(rng, rng.choice(["plastic", "coated"]))
    floor.update(base_color=_color(rng, 0.02, 0.2), roughness=_r(rng.uniform(0.03, 0.3)))
    objects = [{"mesh": "plane", "scale": _vec(30, 30, 1), "material": floor}]
    for side in (-1, 1):  # facades along the street
        for i in range(rng.randint(2, 4)):
            height = rng.uniform(2, 6)
            objects.append(_box((side * rng.uniform(3, 4.5), -4 + 3.5 * i, height / 2),
                                (rng.uniform(0.5, 1.2), rng.uniform(1, 1.6), height / 2),
                                make_material(rng, rng.choice(["diffuse", "diffuse", "plastic"]))))
    for _ in range(rng.randint(3, 7)):  # neon tubes: thin emissive bars on the facades and on posts
        hue = rng.choice([(1.0, 0.1, 0.6), (0.1, 0.6, 1.0), (1.0, 0.4, 0.05), (0.3, 1.0, 0.3),
                          (0.7, 0.2, 1.0)])
        neon = {"base_color": _vec(*hue), "emission": _vec(*hue), "emission_strength": _r(rng.uniform(5, 40))}
        length, r = rng.uniform(0.4, 1.6), rng.uniform(0.015, 0.04)
        vertical = rng.random() < 0.4
        objects.append({"mesh": "cylinder", "smooth": True, "modifiers": [], "material": neon,
                        "scale": _vec(r, r, length / 2),
                        "location": _vec(rng.choice([-1, 1]) * rng.uniform(2.3, 3.0), rng.uniform(-4, 6),
                                         rng.uniform(1.0, 3.5)),
                        "rotation": _vec(0 if vertical else math.pi / 2, 0, rng.uniform(0, math.pi))})
    for _ in range(rng.randint(0, 3)):  # props on the street
        objects.append(make_object(rng, (0, 0), 2.0, size=(0.2, 0.5)))
    lights = [] if rng.random() < 0.5 else [local_light(rng, [0, 2, 0], 2.0)]
    world = {"type": "color", "color": _vec(0.02, 0.03, 0.08), "strength": _r(rng.uniform(0.0, 0.6))}
    cam = {"location": _vec(rng.uniform(-1, 1), -7 - rng.uniform(0, 2), rng.uniform(0.3, 1.8)),
           "target": _vec(rng.uniform(-0.5, 0.5), 4, rng.uniform(0.5, 1.5)), "lens": _r(rng.uniform(24, 50))}
    return {"world": world, "lights": lights, "objects": objects, "camera": cam}


def motion(rng: random.Random) -> dict:
    """A studio or interior set with strong motion blur: several props moving fast during an open
    shutter, often a moving camera as well (blurred edges, smeared guides)."""
    scene = (studio if rng.random() < 0.6 else interior)(rng)
    props = [o for o in scene["objects"]
             if o["mesh"] != "plane" and max(o["scale"]) <= 1.01 * min(o["scale"])]  # not walls or floor
    for obj in rng.sample(props, min(len(props), rng.randint(2, 4))):
        obj["motion"] = {"location_delta": _vec(rng.uniform(-0.8, 0.8), rng.uniform(-0.8, 0.8),
                                                rng.uniform(-0.2, 0.2)),
                         "rotation_delta": _vec(0, 0, rng.uniform(-1.5, 1.5))}
    if rng.random() < 0.5:
        scene["camera"]["motion"] = {"location_delta": _vec(rng.uniform(-0.25, 0.25), 0,
                                                            rng.uniform(-0.1, 0.1))}
    scene["motion_blur"] = {"shutter": _r(rng.uniform(0.5, 1.0))}
    return scene


BUILDERS = {"interior": interior, "exterior": exterior, "studio": studio, "caustics": caustics,
            "volume": volume, "closeup": closeup, "fog": fog, "dof": dof,
            "glass": glass, "glossy": glossy, "motion": motion}
assert set(BUILDERS) == set(KINDS) | set(STRESS_KINDS)


def make_scene(seed: int, resolution: tuple[int, int] = (128, 128), kind: str | None = None) -> dict:
    """A complete scene spec for ``seed``; the kind is drawn from the seed unless given."""
    rng = random.Random(seed)
    kind = kind or rng.choices(KINDS, [3, 3, 2, 2, 2, 2])[0]
    scene = BUILDERS[kind](rng)
    # extras that any kind may get
    if rng.random() < 0.2:
        scene["objects"].append(hair_object(rng, (rng.uniform(-1, 1), rng.uniform(-1, 1))))
    if rng.random() < 0.25:
        scene["objects"].append(thin_geometry(rng, (0.0, 0.0)))
    if rng.random() < 0.25:
        scene["objects"].append(make_object(rng, (0, 0), 2.0, size=(0.1, 0.3),
                                            material=make_material(rng, "emissive")))
    if rng.random() < 0.2:
        moving = [o for o in scene["objects"][1:] if "volume" not in o["material"]]
        for obj in rng.sample(moving, min(len(moving), rng.randint(1, 3))):
            obj["motion"] = {"location_delta": _vec(*(rng.uniform(-0.4, 0.4) for _ in range(3))),
                             "rotation_delta": _vec(0, 0, rng.uniform(-0.5, 0.5))}
        if rng.random() < 0.3:
            scene["camera"]["motion"] = {"location_delta": _vec(rng.uniform(-0.1, 0.1), 0, 0)}
        scene["motion_blur"] = {"shutter": _r(rng.uniform(0.3, 1.0))}
    scene.update(kind=kind, seed=seed, resolution=list(resolution))
    _clear_camera(scene)
    return scene


def _solid_radius(obj: dict) -> float | None:
    """Bounding radius of a prop (uniformly scaled primitive, unit size), None for what a camera may be in:
    the floor, volumes (fog fills the set on purpose) and the room's walls (checked as the room instead)."""
    scale = obj["scale"]
    if obj["mesh"] == "plane" or "volume" in obj["material"] or max(scale) > 1.01 * min(scale):
        return None
    return 1.8 * scale[0] + (0.5 if "motion" in obj else 0.0) + 0.1  # cube corners: sqrt(3); monkey ~1.4


def _camera_ok(location: list[float], scene: dict) -> bool:
    for obj in scene["objects"]:
        radius = _solid_radius(obj)
        if radius is not None and math.dist(location, obj["location"]) < radius:
            return False
    if scene["kind"] == "interior":  # inside the room: objects[1] is the ceiling, (w/2, d/2, t) at h + t
        ceiling = scene["objects"][1]
        half_w, half_d = ceiling["scale"][0] - 0.15, ceiling["scale"][1] - 0.15
        height = ceiling["location"][2] - ceiling["scale"][2] - 0.15
        return abs(location[0]) < half_w and abs(location[1]) < half_d and 0.15 < location[2] < height
    return True


def _clear_camera(scene: dict) -> None:
    """A camera inside a prop, or outside an interior's room, renders black (a few % of early views did).
    Move it along its line of sight -- back first, then closer -- to the first clear spot. Draws nothing
    from the scene's RNG, so every scene whose camera was already clear stays exactly as it was."""
    cam = scene["camera"]
    if _camera_ok(cam["location"], scene):
        return
    target = cam["target"]
    offset = [c - t for c, t in zip(cam["location"], target, strict=True)]
    for factor in [1 + 0.1 * i for i in range(1, 16)] + [1 - 0.1 * i for i in range(1, 8)]:
        candidate = _vec(*(t + factor * o for t, o in zip(target, offset, strict=True)))
        if _camera_ok(candidate, scene):
            cam["location"] = candidate
            if "dof" in cam:  # keep the focus where it was relative to the target
                cam["dof"]["distance"] = _r(cam["dof"]["distance"] * factor)
            return
