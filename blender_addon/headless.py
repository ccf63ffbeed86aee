"""The work of denoise.py: configure passes, render each frame, denoise it, write EXR (and PNG).

With ``--temporal`` every frame is rendered first and the frames are then denoised in order as one shot
(the worker's ``shot`` request: denoiser_core.shot, as ``kprcan denoise --temporal``).

Blender renders; the worker process (worker.py) reads, denoises and writes the EXRs, so the pip OpenEXR
never runs inside a Blender that has its own (Debian's Blender 3.4 crashed there).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

import bpy
import numpy as np

from . import compat, render_setup
from .core import core
from .worker import COMPOSITOR_LAYER, Worker, WorkerError, device_text


def _fail(message: str, code: int) -> int:
    print(f"denoise.py: error: {message}", file=sys.stderr)
    return code


def output_folder(text: str) -> Path:
    resolved = bpy.path.abspath(text)
    if resolved.startswith("//"):  # unsaved file: relative to the working directory
        resolved = resolved[2:]
    return Path(resolved).expanduser().absolute()


def render_noisy(scene, path: Path) -> None:
    """Render the current frame to ``path`` as a float multilayer EXR with every enabled pass."""
    scene.render.filepath = str(path)
    scene.render.use_file_extension = False
    with compat.temporary_image_settings(scene, compat.set_multilayer_exr):
        bpy.ops.render.render(write_still=True, scene=scene.name)
    if not path.is_file():
        raise core().DenoiserError(f"{path}: Blender did not write the render", exit_code=1)


def write_png(scene, worker, exr_path: Path, png_path: Path) -> None:
    """The denoised beauty through the scene's view transform and look, as an 8-bit PNG (atomic)."""
    pixels = png_path.with_name(f".{png_path.stem}.{os.getpid()}.rgba.npy")
    temp = png_path.with_name(f".{png_path.stem}.{os.getpid()}.tmp.png")
    preview = None
    try:
        worker.request("beauty", input=str(exr_path), output=str(pixels))
        rgba = np.load(pixels)
        height, width = rgba.shape[:2]
        preview = bpy.data.images.new("kprcan_png", width, height, alpha=True, float_buffer=True)
        preview.pixels.foreach_set(np.ascontiguousarray(rgba[::-1]).ravel())  # Blender rows: bottom up
        with compat.temporary_image_settings(scene, compat.set_png):
            preview.save_render(str(temp), scene=scene)
        os.replace(temp, png_path)
    finally:
        pixels.unlink(missing_ok=True)
        temp.unlink(missing_ok=True)
        if preview is not None:
            bpy.data.images.remove(preview)


def run(args) -> int:
    try:
        dc = core()
    except ImportError as error:
        return _fail(f"{error} (enable the KPRCAN extension, or pip install onnxruntime OpenEXR)", 1)
    worker = Worker()
    try:
        return _run(args, dc, worker)
    except (dc.DenoiserError, WorkerError) as error:
        return _fail(str(error), error.exit_code)
    except Exception:  # a bug: show where, still exit non-zero
        traceback.print_exc()
        return 1
    finally:
        worker.stop()


def _run(args, dc, worker: Worker) -> int:
    scene = bpy.context.scene
    if args.samples is not None and args.samples < 1:
        return _fail("--samples must be at least 1", 2)
    info = dc.models.resolve_model(args.model)  # metadata only: a bad model name fails before any work
    frames = args.frames or list(range(scene.frame_start, scene.frame_end + 1, scene.frame_step))
    folder = output_folder(args.output)
    stem = Path(bpy.data.filepath).stem if bpy.data.filepath else "untitled"
    targets = {frame: folder / f"{stem}_{frame:04d}.exr" for frame in frames}
    wanted = [path for target in targets.values() for path in (target, target.with_suffix(".png"))
              if path.suffix == ".exr" or args.png]
    existing = [path for path in wanted if path.exists()]
    if existing and not args.overwrite:
        return _fail(f"{existing[0]}: exists (use --overwrite to replace it)", 2)
    if args.temporal and scene.render.use_motion_blur:
        return _fail(f"--temporal needs Motion Blur off: {render_setup.NO_VECTOR_WITH_MOTION_BLUR}", 2)
    if args.temporal and any(b - a != 1 for a, b in zip(frames, frames[1:], strict=False)):
        # the Vector pass points one frame back: history would restart at every frame, blending nothing
        return _fail("--temporal needs consecutive frames (Frame Step 1, a --frames range without gaps)", 2)
    # the session is built once, in the worker process, before any rendering (a bad model file fails here)
    ran = worker.request("load", model=str(info.path), device=args.device)
    folder.mkdir(parents=True, exist_ok=True)
    report = render_setup.configure_passes(scene, info, temporal=args.temporal)
    print(f"denoise.py: model {info.name} {device_text(ran)}; {report.summary()} "
          f"(denoiser_core from {Path(dc.__file__).parent})", flush=True)
    if args.samples is not None:
        scene.cycles.samples = args.samples
    tile = dc.inference.DEFAULT_TILE if args.tile is None else args.tile
    noisy_paths = {frame: folder / (f"{stem}_{frame:04d}_noisy.exr" if args.keep_noisy
                                    else f".{stem}_{frame:04d}.noisy.exr") for frame in frames}
    if args.temporal:
        return _render_then_denoise_shot(args, scene, worker, info, targets, noisy_paths, tile)
    for frame, target in targets.items():
        started = time.perf_counter()
        scene.frame_set(frame)
        noisy = noisy_paths[frame]
        try:
            render_noisy(scene, noisy)
            rendered = time.perf_counter()
            worker.request("denoise", input=str(noisy), output=str(target), model=str(info.path),
                           device=args.device, tile=tile, drop_layers=[COMPOSITOR_LAYER])
            if args.png:
                write_png(scene, worker, target, target.with_suffix(".png"))
        finally:
            if not args.keep_noisy:
                noisy.unlink(missing_ok=True)
        print(f"denoise.py: frame {frame}: {target} (render {rendered - started:.1f} s, "
              f"denoise {time.perf_counter() - rendered:.1f} s)", flush=True)
    return 0


def _render_then_denoise_shot(args, scene, worker: Worker, info, targets: dict[int, Path],
                              noisy_paths: dict[int, Path], tile: int) -> int:
    """--temporal: render every frame, then denoise them in order, each blended with the previous one."""
    try:
        for frame, noisy in noisy_paths.items():
            started = time.perf_counter()
            scene.frame_set(frame)
            render_noisy(scene, noisy)
            print(f"denoise.py: frame {frame}: rendered ({time.perf_counter() - started:.1f} s)", flush=True)
        started = time.perf_counter()
        frames = [[frame, str(noisy_paths[frame]), str(target)] for frame, target in targets.items()]
        # outputs that existed were refused unless --overwrite: every frame is written
        worker.request("shot", frames=frames, model=str(info.path), device=args.device, tile=tile,
                       overwrite=True, drop_layers=[COMPOSITOR_LAYER])
        denoised = time.perf_counter()
        if args.png:
            for target in targets.values():
                write_png(scene, worker, target, target.with_suffix(".png"))
    finally:
        if not args.keep_noisy:
            for noisy in noisy_paths.values():
                noisy.unlink(missing_ok=True)
    for frame, target in targets.items():
        print(f"denoise.py: frame {frame}: {target}", flush=True)
    print(f"denoise.py: {len(targets)} frame(s) denoised in temporal mode ({denoised - started:.1f} s)",
          flush=True)
    return 0
