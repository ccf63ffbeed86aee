"""Small rendered shots for temporal denoising: a static shot, a camera pan, an object moving across a
textured wall (disocclusions) and a cut between two camera set-ups.

Every shot is rendered noisy (a different seed each frame, as an animation renders) and as a low-noise
reference per frame, with the Vector pass, by ``render_sequence.py`` in a bpy subprocess. Renders are cached
under a folder by a hash of the shot and the render code, like ``launch.render_cached``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

from .launch import DATAGEN_DIR, code_hash, run_job

RENDER_SEQUENCE = DATAGEN_DIR / "render_sequence.py"

# A room corner: checkered floor, a textured back wall, a diffuse sphere, one area light. Flat, dimly lit
# walls are where a per-frame denoiser's leftover noise shimmers most.
ROOM = {
    "resolution": [96, 64],
    "camera": {"location": [0, -6, 2.2], "target": [0, 0, 1.2], "lens": 35},
    "world": {"type": "color", "color": [0.03, 0.03, 0.04], "strength": 1.0},
    "lights": [{"type": "AREA", "location": [1.5, -2.5, 4], "target": [0, 0, 0.5], "energy": 300,
                "size": 1.0}],
    "objects": [
        {"mesh": "plane", "scale": [6, 6, 1],
         "material": {"base_color": [0.6, 0.6, 0.6], "roughness": 0.8,
                      "texture": {"type": "checker", "scale": 8}}},
        {"mesh": "plane", "location": [0, 2.5, 3], "rotation": [1.5708, 0, 0], "scale": [6, 3, 1],
         "material": {"base_color": [0.7, 0.5, 0.4], "roughness": 0.9,
                      "texture": {"type": "checker", "scale": 6}}},
        {"mesh": "uv_sphere", "location": [-1.5, 0.3, 0.8], "scale": [0.8, 0.8, 0.8], "smooth": True,
         "material": {"base_color": [0.2, 0.4, 0.8], "roughness": 0.4}},
    ],
    "kind": "temporal_test",
}
SPHERE = 2  # index of the sphere in ROOM["objects"]


def _camera(location, target) -> dict:
    return {"location": list(location), "target": list(target)}


def shot_keys(shot: str, frames: int) -> tuple[dict, str]:
    """Keyframes and interpolation of ``shot`` over frames 1..frames."""
    cam = ROOM["camera"]
    if shot == "static":
        return {}, "LINEAR"
    if shot == "pan":  # the camera trucks right, 0.12 m a frame (about 2.5 px at the wall)
        return {"camera": {str(f): _camera([0.12 * (f - 1), *cam["location"][1:]],
                                           [0.12 * (f - 1), *cam["target"][1:]])
                           for f in range(1, frames + 1)}}, "LINEAR"
    if shot == "moving":  # the sphere rolls right across the textured wall, 0.45 m a frame
        start = ROOM["objects"][SPHERE]["location"]
        return {"objects": {str(SPHERE): {str(f): {"location": [start[0] + 0.45 * (f - 1), *start[1:]]}
                                          for f in range(1, frames + 1)}}}, "LINEAR"
    if shot == "cut":  # a second camera set-up from the middle frame on
        second = frames // 2 + 1
        return {"camera": {"1": _camera(cam["location"], cam["target"]),
                           str(second): _camera([3.5, -4.0, 1.2], [-0.5, 0.5, 1.0])}}, "CONSTANT"
    raise ValueError(f"unknown shot {shot!r}")


SHOTS = ("static", "pan", "moving", "cut")


def render_shot(shot: str, cache_dir: str | Path, frames: int = 6, samples: int = 16, ref_samples: int = 256,
                resolution: tuple[int, int] | None = None, python: str | None = None,
                threads: int = 2) -> dict[str, list[Path]]:
    """Noisy and reference EXRs of ``shot`` (``{"noisy": [...], "reference": [...]}``, frame order).

    Frames are numbered from 1 and named ``noisy_####.exr`` / ``reference_####.exr`` in a folder keyed by
    the shot, its settings and the render code. A static shot has one reference (its image never changes).
    """
    scene = copy.deepcopy(ROOM)
    if resolution:
        scene["resolution"] = list(resolution)
    keys, interpolation = shot_keys(shot, frames)
    key_source = json.dumps([scene, keys, interpolation, frames, samples, ref_samples, threads, python,
                             code_hash(), RENDER_SEQUENCE.read_bytes().hex()], sort_keys=True)
    folder = Path(cache_dir) / f"{shot}-{hashlib.sha256(key_source.encode()).hexdigest()[:16]}"
    noisy = [folder / f"noisy_{f:04d}.exr" for f in range(1, frames + 1)]
    reference_frames = 1 if shot == "static" else frames
    references = [folder / f"reference_{f:04d}.exr" for f in range(1, reference_frames + 1)]
    renders = [{"frame": f, "samples": samples, "seed": f, "out": str(path)}
               for f, path in enumerate(noisy, start=1)]
    renders += [{"frame": f, "samples": ref_samples, "seed": 1000 + f, "out": str(path)}
                for f, path in enumerate(references, start=1)]
    if not all(path.exists() for path in noisy + references):
        job = {"scene": scene, "keys": keys, "interpolation": interpolation, "threads": threads,
               "renders": renders}
        run_job(job, python=python, timeout=1800, script=RENDER_SEQUENCE)
    return {"noisy": noisy, "reference": references}
