"""The work of denoise.py: configure passes, render each frame, denoise it, write EXR (and PNG)."""

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


def write_png(scene, exr_path: Path, png_path: Path) -> None:
    """The denoised beauty through the scene's view transform and look, as an 8-bit PNG (atomic)."""
    dc = core()
    image = dc.read_exr(exr_path)
    combined = next((p for p in image.passes if p.canonical == "combined"), None)
    if combined is None:
        raise dc.DenoiserError(f"{exr_path}: no Combined pass to write as PNG", exit_code=1)
    height, width = combined.hwc.shape[:2]
    rgba = np.ones((height, width, 4), np.float32)
    rgba[..., :combined.hwc.shape[2]] = combined.hwc[..., :4]
    preview = bpy.data.images.new("kprcan_png", width, height, alpha=True, float_buffer=True)
    temp = png_path.with_name(f".{png_path.stem}.{os.getpid()}.tmp.png")
    try:
        preview.pixels.foreach_set(np.ascontiguousarray(rgba[::-1]).ravel())  # Blender rows: bottom up
        with compat.temporary_image_settings(scene, compat.set_png):
            preview.save_render(str(temp), scene=scene)
        os.replace(temp, png_path)
    finally:
        temp.unlink(missing_ok=True)
        bpy.data.images.remove(preview)


def run(args) -> int:
    try:
        dc = core()
    except ImportError as error:
        return _fail(f"{error} (enable the KPRCAN extension, or pip install onnxruntime OpenEXR)", 1)
    try:
        return _run(args, dc)
    except dc.DenoiserError as error:
        return _fail(str(error), error.exit_code)
    except Exception:  # a bug: show where, still exit non-zero
        traceback.print_exc()
        return 1


def _run(args, dc) -> int:
    scene = bpy.context.scene
    if args.samples is not None and args.samples < 1:
        return _fail("--samples must be at least 1", 2)
    denoiser = dc.load_model(args.model, args.device)  # a bad model fails before any rendering
    frames = args.frames or list(range(scene.frame_start, scene.frame_end + 1, scene.frame_step))
    folder = output_folder(args.output)
    stem = Path(bpy.data.filepath).stem if bpy.data.filepath else "untitled"
    targets = {frame: folder / f"{stem}_{frame:04d}.exr" for frame in frames}
    wanted = [path for target in targets.values() for path in (target, target.with_suffix(".png"))
              if path.suffix == ".exr" or args.png]
    existing = [path for path in wanted if path.exists()]
    if existing and not args.overwrite:
        return _fail(f"{existing[0]}: exists (use --overwrite to replace it)", 2)
    folder.mkdir(parents=True, exist_ok=True)
    report = render_setup.configure_passes(scene, denoiser.info)
    print(f"denoise.py: model {denoiser.info.name} on {denoiser.providers[0]}; {report.summary()} "
          f"(denoiser_core from {Path(dc.__file__).parent})")
    if args.samples is not None:
        scene.cycles.samples = args.samples
    tile = dc.inference.DEFAULT_TILE if args.tile is None else args.tile
    for frame, target in targets.items():
        started = time.perf_counter()
        scene.frame_set(frame)
        name = f"{stem}_{frame:04d}_noisy.exr" if args.keep_noisy else f".{stem}_{frame:04d}.noisy.exr"
        noisy = folder / name
        try:
            render_noisy(scene, noisy)
            rendered = time.perf_counter()
            dc.denoise_file(noisy, target, model=denoiser, tile=tile, overwrite=True)
            if args.png:
                write_png(scene, target, target.with_suffix(".png"))
        finally:
            if not args.keep_noisy:
                noisy.unlink(missing_ok=True)
        print(f"denoise.py: frame {frame}: {target} (render {rendered - started:.1f} s, "
              f"denoise {time.perf_counter() - rendered:.1f} s)", flush=True)
    return 0
