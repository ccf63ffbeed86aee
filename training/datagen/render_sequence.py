"""Render an animated scene spec frame by frame with the Vector pass (runs inside a bpy process only).

Usage: ``python training/datagen/render_sequence.py JOB.json`` with a Python that has pip bpy. JOB.json::

    {"scene": {...scene spec, docs/data.md...}, "threads": 2,
     "keys": {"camera": {"3": {"location": [..], "target": [..]}},
              "objects": {"1": {"3": {"location": [..]}}}},
     "interpolation": "LINEAR",
     "renders": [{"frame": 1, "samples": 16, "seed": 1, "out": "/abs/f1.exr"}, ...]}

``keys`` are keyframes (frame number as a string -> values); Cycles derives the Vector pass (motion to the
previous and next frame) from them, so motion blur stays off. Each frame is written to a temporary file
and renamed, and frames whose ``out`` exists are skipped, like render.py.
"""

from __future__ import annotations

import json
import os
import sys

# Runs as a plain script inside bpy's Python: make the sibling modules importable without the package.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import blender_compat  # noqa: E402
import bpy_scene  # noqa: E402


def _keyframe(obj, frame: int, values: dict, interpolation: str) -> None:
    if "location" in values:
        obj.location = values["location"]
        obj.keyframe_insert("location", frame=frame)
    if "target" in values:
        bpy_scene.point_at(obj, values["target"])
        obj.keyframe_insert("rotation_euler", frame=frame)
    action = obj.animation_data.action if obj.animation_data else None
    for curve in action.fcurves if action else []:
        for point in curve.keyframe_points:
            point.interpolation = interpolation


def add_keys(scene, keys: dict, interpolation: str) -> None:
    objects = [o for o in scene.objects if o.name.startswith("obj")]
    by_index = {int(o.name[3:].split("_")[0]): o for o in objects}
    for frame, values in keys.get("camera", {}).items():
        _keyframe(scene.camera, int(frame), values, interpolation)
    for index, frames in keys.get("objects", {}).items():
        for frame, values in frames.items():
            _keyframe(by_index[int(index)], int(frame), values, interpolation)


def run(job: dict) -> None:
    scene = bpy_scene.build_scene(job["scene"])
    add_keys(scene, job.get("keys", {}), job.get("interpolation", "LINEAR"))
    for render in job["renders"]:
        out = os.path.abspath(render["out"])
        if os.path.exists(out):
            continue
        os.makedirs(os.path.dirname(out), exist_ok=True)
        scene.frame_set(int(render["frame"]))
        bpy_scene.configure_cycles(scene, render["samples"], render["seed"], int(job.get("threads", 0)))
        scene.render.use_motion_blur = False  # Cycles writes no Vector pass with motion blur
        scene.view_layers[0].use_pass_vector = True
        partial = out + ".partial.exr"
        blender_compat.render_multilayer_exr(scene, partial)
        os.replace(partial, out)
        print("RESULT " + json.dumps({"out": out, "frame": render["frame"]}), flush=True)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        run(json.load(f))
