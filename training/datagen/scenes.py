"""Procedural scene specs, deterministic from a seed (pure Python: no bpy, no numpy).

``make_scene(seed, resolution)`` returns a JSON-able dict that training/datagen/bpy_scene.py builds
inside Blender. The same seed always gives the same dict (only ``random.Random(seed)`` is used).
"""

from __future__ import annotations

import math
import random

KINDS = ("interior", "exterior", "studio", "caustics", "volume", "closeup")
# Kinds that stress what the networks see least: never drawn at random (so every seed's scene of KINDS
# stays as it was), rendered on request with ``render --kinds`` (test views, stress training views).
STRESS_KINDS = ("fog", "dof", "glass", "glossy", "motion")
PRIMITIVES = ("cube", "uv_sphere", "ico_sphere", "cylinder", "cone", "torus", "monkey")
TEXTURES = ("noise", "voronoi", "checker", "wave", "brick", "image")


def _r(x: float) -> float:
    return round(float(x), 4)


def _vec(*xs: float) -> list[float]:
    return [_r(x) for x in xs]


def _color(rng: random.Random, lo: float = 0.05, hi: float = 0.9) -> list[float]:
    return _vec(*(rng.uniform(lo, hi) for _ in range(3)))


def _light_tint(rng: random.Random) -> list[float]:
    """White balance variety: warm (tungsten) to cool (overcast) light colours."""
    t = rng.uniform(-1, 1)
    return _vec(1.0, 1.0 - 0.15 * abs(t), 1.0 - 0.35 * t if t > 0 else 1.0) if t > 0 else \
        _vec(1.0 + 0.25 * t, 1.0 + 0.1 * t, 1.0)


def _texture(rng: random.Random, high_freq: bool = False) -> dict:
    kind = rng.choice(TEXTURES)
    scale = rng.uniform(20, 120) if high_freq else rng.uniform(2, 20)
    return {"type": kind, "scale": _r(scale), "seed": rng.randrange(10**6), "color2": _color(rng),
            "color1": _color(rng), "detail": _r(rng.uniform(1, 10)), "pixelated": rng.random() < 0.3}


def make_material(rng: random.Random, kind: str | None = None) -> dict:
    kind = kind or rng.choices(["diffuse", "plastic", "metal", "glass", "emissive", "coated"],
                               [4, 3, 3, 2, 1, 1])[0]
    mat: dict = {"base_color": _color(rng), "roughness": _r(rng.uniform(0.2, 0.9))}
    if kind == "plastic":
        mat.update(roughness=_r(rng.uniform(0.05, 0.5)))
    elif kind == "metal":
        mat.update(metallic=1.0, roughness=_r(rng.choice([rng.uniform(0.0, 0.08), rng.uniform(0.1, 0.6)])),
                   base_color=_color(rng, 0.4, 1.0))
    elif kind == "glass":
        mat.update(transmission=1.0, roughness=_r(rng.choice([0.0, 0.0, rng.uniform(0.02, 0.3)])),
                   ior=_r(rng.uniform(1.3, 1.8)), base_color=_color(rng, 0.7, 1.0))
    elif kind == "emissive":
        mat.update(emission=_light_tint(rng), emission_strength=_r(rng.uniform(2, 30)))
    elif kind == "coated":
        mat.update(coat=1.0, roughness=_r(rng.uniform(0.3, 0.8)))
    if kind != "emissive" and rng.random() < 0.55:
        mat["texture"] = _texture(rng, high_freq=rng.random() < 0.25)
        mat["roughness_texture"] = rng.random() < 0.4
    if kind not in ("emissive", "glass") and rng.random() < 0.35:
        if rng.random() < 0.5:
            mat["bump"] = {**_texture(rng), "strength": _r(rng.uniform(0.2, 1.0)),
                           "distance": _r(rng.uniform(0.01, 0.1))}
        else:
            mat["normal_map"] = {"seed": rng.randrange(10**6), "strength": _r(rng.uniform(0.3, 1.5))}
    mat["generated_coords"] = rng.random() < 0.5
    return mat


def make_object(rng: random.Random, center: tuple[float, float], spread: float, floor_z: float = 0.0,
                size: tuple[float, float] = (0.3, 1.0), material: dict | None = None) -> dict:
    mesh = rng.choice(PRIMITIVES)
    s = rng.uniform(*size)
    obj = {"mesh": mesh, "scale": _vec(s, s, s), "smooth": mesh != "cube" and rng.random() < 0.8,
           "location": _vec(center[0] + rng.uniform(-spread, spread),
                            center[1] + rng.uniform(-spread, spread),
                            floor_z + s * (0.5 if mesh == "torus" else 1.0)),
           "rotation": _vec(0, 0, rng.uniform(0, 2 * math.pi)),
           "material": material or make_material(rng), "modifiers": []}
    if mesh in ("cube", "cylinder") and rng.random() < 0.4:
        obj["modifiers"].append({"type": "BEVEL", "width": _r(rng.uniform(0.02, 0.15)), "segments": 3})
    if mesh in ("ico_sphere", "cube", "monkey") and rng.random() < 0.3:
        obj["modifiers"].append({"type": "SUBSURF", "levels": 2})
    if rng.random() < 0.12:
        obj["modifiers"].append({"type": "WIREFRAME", "thickness": _r(rng.uniform(0.01, 0.06))})
    if rng.random() < 0.1:
        obj["modifiers"].append({"type": "DISPLACE", "strength": _r(rng.uniform(0.05, 0.3)),
                                 "noise_scale": _r(rng.uniform(0.2, 1.0))})
    return obj


def thin_geometry(rng: random.Random, center: tuple[float, float]) -> dict:
    """A fence of thin bars (array modifier) or a wireframe grid: high-frequency geometry."""
    if rng.random() < 0.5:
        r = rng.uniform(0.01, 0.04)
        return {"mesh": "cylinder", "scale": _vec(r, r, rng.uniform(0.4, 1.2)),
                "location": _vec(center[0] + rng.uniform(-2, 0), center[1] + rng.uniform(-1, 1.5), 0.6),
                "rotation": _vec(0, 0, 0), "material": make_material(rng, rng.choice(["metal", "diffuse"])),
                "modifiers": [{"type": "ARRAY", "count": rng.randint(8, 30),
                               "offset": _vec(rng.uniform(3, 8), 0, 0)}]}
    s = rng.uniform(0.6, 1.5)
    return {"mesh": "grid", "scale": _vec(s, s, s), "location": _vec(center[0], center[1] + 1.0, s),
            "rotation": _vec(math.pi / 2 + rng.uniform(-0.4, 0.4), 0, rng.uniform(-0.8, 0.8)),
            "material": make_material(rng, "metal"),
            "modifiers": [{"type": "WIREFRAME", "thickness": _r(rng.uniform(0.005, 0.03))}]}


def hair_object(rng: random.Random, center: tuple[float, float]) -> dict:
    obj = make_object(rng, center, 1.0, size=(0.4, 0.8), material=make_material(rng, "diffuse"))
    obj.update(mesh=rng.choice(["uv_sphere", "ico_sphere", "cube"]), modifiers=[])
    obj["hair"] = {"count": rng.randint(300, 2000), "length": _r(rng.uniform(0.1, 0.5)),
                   "radius": _r(rng.uniform(0.3, 1.0)), "seed": rng.randrange(10**6),
                   "material": make_material(rng, rng.choice(["diffuse", "plastic"]))}
    return obj


def camera(rng: random.Random, target: list[float], dist: tuple[float, float],
           height: tuple[float, float]) -> dict:
    angle = rng.uniform(-math.pi, math.pi) if rng.random() < 0.3 else rng.uniform(-2.2, -0.9)
    d = rng.uniform(*dist)
    cam = {"location": _vec(target[0] + d * math.cos(angle), target[1] + d * math.sin(angle),
                            rng.uniform(*height)),
           "target": target, "lens": _r(rng.choice([rng.uniform(18, 35), rng.uniform(35, 85)]))}
    if rng.random() < 0.25:
        cam["dof"] = {"distance": _r(d * rng.uniform(0.6, 1.1)), "fstop": _r(rng.uniform(0.8, 4.0))}
    return cam


def sky_world(rng: random.Random, elevation: float) -> dict:
    if rng.random() < 0.6:
        return {"type": "sky", "sun_elevation": _r(elevation), "sun_rotation": _r(rng.uniform(0, 6.28)),
                "strength": _r(rng.uniform(0.1, 0.4)), "air": _r(rng.uniform(0.5, 3)),
                "dust": _r(rng.uniform(0, 4))}
    return {"type": "gradient", "horizon": _color(rng, 0.5, 1.0), "zenith": _vec(0.1, 0.25, 0.8),
            "strength": _r(rng.uniform(0.3, 1.5))}


def sun(rng: random.Random, elevation: float, azimuth: float, energy: float) -> dict:
    return {"type": "SUN", "energy": _r(energy), "angle": _r(rng.uniform(0.005, 0.1)),
            "color": _light_tint(rng), "rotation": _vec(math.pi / 2 - elevation, 0, azimuth + math.pi / 2)}


def local_light(rng: random.Random, center: list[float], reach: float) -> dict:
    kind = rng.choice(["AREA", "POINT", "SPOT", "SMALL"])
    pos = _vec(center[0] + rng.uniform(-reach, reach), center[1] + rng.uniform(-reach, reach),
               center[2] + rng.uniform(1.5, 3.5))
    light = {"type": "POINT" if kind == "SMALL" else kind, "location": pos, "target": center,
             "color": _light_tint(rng), "energy": _r(rng.uniform(100, 800))}
    if kind == "AREA":
        light.update(size=_r(rng.uniform(0.3, 2.5)), size_y=_r(rng.uniform(0.3, 2.5)))
    elif kind == "SMALL":  # tiny bright source: hard shadows, caustics, fireflies
        light.update(size=_r(rng.uniform(0.0, 0.03)), energy=_r(rng.uniform(200, 1500)))
    else:
        light["size"] = _r(rng.uniform(0.02, 0.3))
        if kind == "SPOT":
            light.update(spot_size=_r(rng.uniform(0.4, 1.4)), spot_blend=_r(rng.uniform(0, 0.5)),
                         energy=_r(rng.uniform(300, 2000)))
    return light
