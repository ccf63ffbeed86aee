"""Render one job in this (bpy) process: build a scene from a spec (or open a .blend), render images.

Usage (with a Python that has pip bpy 4.5 or 5.0)::

    python training/datagen/render.py JOB.json        # or: python -m training.datagen.render JOB.json

JOB.json::

    {"scene": {...scene spec...}          # or "blend": "file.blend", "frame": 1, "camera_jitter": {...}
     "threads": 2, "max_bounces": 12, "exr_single_part": true,
     "renders": [{"samples": 16, "seed": 3, "out": "/abs/path/a.exr"}, ...]}

Each image is written to a temporary file next to ``out`` and moved into place when complete, so an
interrupted job never leaves a half-written EXR. Renders whose ``out`` already exists are skipped. One
line ``RESULT {json}`` per image goes to stdout (out, samples, seed, render_seconds).
"""

from __future__ import annotations

import json
import os
import sys
import time

# Runs as a plain script inside bpy's Python: make the sibling modules importable without the package.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import blender_compat  # noqa: E402
import bpy  # noqa: E402
import bpy_scene  # noqa: E402


def open_blend(job: dict):
    bpy.ops.wm.open_mainfile(filepath=job["blend"])
    scene = bpy.context.scene
    if scene.camera is None:
        raise SystemExit(f"error: {job['blend']} has no active camera")
    scene.render.engine = "CYCLES"
    scene.frame_set(int(job.get("frame", scene.frame_current)))
    if job.get("camera_jitter"):
        bpy_scene.apply_camera_jitter(scene, job["camera_jitter"])
    if job.get("resolution"):
        scene.render.resolution_x, scene.render.resolution_y = job["resolution"]
        scene.render.resolution_percentage = 100
    return scene


def run(job: dict) -> None:
    scene = open_blend(job) if "blend" in job else bpy_scene.build_scene(job["scene"])
    for render in job["renders"]:
        out = os.path.abspath(render["out"])
        if os.path.exists(out):
            continue
        os.makedirs(os.path.dirname(out), exist_ok=True)
        bpy_scene.configure_cycles(scene, render["samples"], render["seed"], int(job.get("threads", 0)),
                                   int(job.get("max_bounces", 12)))
        partial = out + ".partial.exr"
        start = time.perf_counter()
        # single-part EXR (Blender 4.x layout) unless the job asks for 5.0's default multi-part layout
        blender_compat.set_multilayer_exr(scene.render.image_settings,
                                          single_part=bool(job.get("exr_single_part", True)))
        blender_compat.render_multilayer_exr(scene, partial)
        seconds = time.perf_counter() - start
        if not os.path.exists(partial):
            raise SystemExit(f"error: Blender wrote no file for {out}")
        os.replace(partial, out)
        result = {"out": out, "samples": render["samples"], "seed": render["seed"],
                  "render_seconds": round(seconds, 3), "blender": bpy.app.version_string}
        print("RESULT " + json.dumps(result), flush=True)


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: render.py JOB.json")
    with open(argv[0]) as f:
        job = json.load(f)
    run(job)


if __name__ == "__main__":
    main(sys.argv[1:])
