"""Speed and peak memory of each shipped model against OIDN, at 1920x1080 and 3840x2160.

    .venv/bin/python benchmarks/benchmark_speed.py [EXR ...] [--sizes 1920x1080,3840x2160] [--frames 3]

Frames are synthesised from the given multilayer EXR(s) (default: examples/noisy.exr) by mirror-tiling every
pass up to each size (``--as-is`` uses the given files unchanged). Every (size, method) runs in a fresh
subprocess, so its peak memory (``ru_maxrss`` of that child, from ``os.wait4``) is its own. A run times
reading the EXR, denoising and writing the result; ``denoise s`` is the denoising alone. OIDN (``pyoidn``)
gets colour + albedo + normal, HDR, quality "high", on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from denoiser_core import list_models, load_model, read_exr, write_exr  # noqa: E402
from denoiser_core.exr import ExrImage, ExrPart, ExrPass  # noqa: E402
from denoiser_core.inference import DEFAULT_TILE  # noqa: E402
from denoiser_core.pipeline import denoise_image  # noqa: E402

PEAK_BUDGET_MIB = 4096  # target: a 3840x2160 frame on the CPU with default settings within 4 GiB


def mirror_tile(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """(C, h, w) -> (C, height, width) by repeating the image mirrored (no seams)."""
    _c, h, w = pixels.shape
    rows = np.arange(height) % (2 * h)
    cols = np.arange(width) % (2 * w)
    rows = np.where(rows >= h, 2 * h - 1 - rows, rows)
    cols = np.where(cols >= w, 2 * w - 1 - cols, cols)
    return np.ascontiguousarray(pixels[:, rows[:, None], cols[None, :]])


def synthesise(source: Path, width: int, height: int, target: Path) -> Path:
    """The first view layer of ``source`` with every pass mirror-tiled to width x height."""
    image = read_exr(source)
    layer = next(layer for layer in image.layers if image.canonical_passes(layer))
    passes = [ExrPass(p.layer, p.name, p.components, mirror_tile(p.pixels, height, width))
              for p in image.passes if p.layer == layer]
    header = {k: v for k, v in image.parts[0].header.items() if k not in ("dataWindow", "displayWindow")}
    write_exr(ExrImage(passes, [ExrPart("", header)]), target)
    return target


def worker(method: str, frames: list[Path], tile: int, device: str) -> dict:
    """One method over ``frames`` in this process; returns seconds per frame (median) and the split."""
    totals, computes = [], []
    denoiser = None if method == "oidn" else load_model(method, device)
    out_dir = Path(tempfile.mkdtemp(prefix="kprcan-bench-"))
    for index, frame in enumerate(frames):
        started = time.perf_counter()
        image = read_exr(frame)
        compute_started = time.perf_counter()
        if denoiser is None:
            _oidn(image)
        else:
            denoise_image(image, denoiser, tile)
        computes.append(time.perf_counter() - compute_started)
        write_exr(image, out_dir / f"{index}.exr")
        # freed before the next read, as denoise_file does: otherwise two 4K frames (~2 GiB each) are
        # alive while the next one is read, and the peak measures this loop rather than the denoiser
        del image
        totals.append(time.perf_counter() - started)
        (out_dir / f"{index}.exr").unlink()
    out_dir.rmdir()
    return {"total_s": float(np.median(totals)), "denoise_s": float(np.median(computes))}


def _oidn(image: ExrImage) -> None:
    import pyoidn

    layer = next(layer for layer in image.layers if image.canonical_passes(layer))
    passes = image.canonical_passes(layer)
    color = np.ascontiguousarray(passes.get("noisy_image", passes["combined"])[..., :3])
    albedo = np.ascontiguousarray(passes["denoising_albedo"][..., :3])
    normal = np.ascontiguousarray(passes["denoising_normal"][..., :3])
    result = pyoidn.denoise(color, albedo, normal, hdr=True, quality="high")
    combined = image.find(layer, next(p.name for p in image.layer_passes(layer).values()
                                      if p.canonical == "combined"))
    combined.pixels[:3] = result.transpose(2, 0, 1)


def run_isolated(method: str, frames: list[Path], tile: int, device: str) -> dict:
    """``worker`` in a fresh subprocess; adds that child's peak resident memory."""
    command = [sys.executable, __file__, "--worker", method, "--tile", str(tile), "--device", device,
               *map(str, frames)]
    with tempfile.TemporaryFile("w+") as captured:
        child = subprocess.Popen(command, stdout=captured, stderr=subprocess.STDOUT, text=True)
        _pid, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        captured.seek(0)
        output = captured.read()
    if child.returncode != 0:
        return {"error": output.strip().splitlines()[-1] if output.strip() else f"exit {child.returncode}"}
    result = json.loads(output.strip().splitlines()[-1])
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    result["peak_mib"] = usage.ru_maxrss * scale / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="*", type=Path, default=[REPO / "examples" / "noisy.exr"])
    parser.add_argument("--sizes", default="1920x1080,3840x2160")
    parser.add_argument("--frames", type=int, default=3, help="frames per run (median is reported)")
    parser.add_argument("--models", default="all", help="comma-separated names/paths, or all shipped models")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE, help="default: the CLI's default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-oidn", action="store_true")
    parser.add_argument("--as-is", action="store_true", help="use the inputs unchanged as the frames")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.inputs, args.tile, args.device)))
        return
    missing = [p for p in args.inputs if not p.is_file()]
    if missing:
        sys.exit(f"benchmark: {missing[0]} not found; pass a multilayer EXR with all passes")
    models = [str(m.path) for m in list_models()] if args.models == "all" else args.models.split(",")
    methods = models + ([] if args.no_oidn else ["oidn"])
    if not models:
        print("no shipped models found: timing OIDN only")
    with tempfile.TemporaryDirectory(prefix="kprcan-bench-frames-") as scratch:
        plans = [("as-is", args.inputs)] if args.as_is else [
            (size, [synthesise(args.inputs[i % len(args.inputs)], *map(int, size.split("x")),
                               Path(scratch) / f"{size}_{i}.exr") for i in range(args.frames)])
            for size in args.sizes.split(",")]
        print(f"{'size':<10} {'method':<24} {'total s':>8} {'denoise s':>10} {'x OIDN':>7} {'peak MiB':>9}")
        for size, frames in plans:
            results = {method: run_isolated(method, frames, args.tile, args.device) for method in methods}
            reference = results.get("oidn", {}).get("denoise_s")
            for method, r in results.items():
                name = Path(method).stem if method.endswith(".onnx") else method
                if "error" in r:
                    print(f"{size:<10} {name:<24} failed: {r['error']}")
                    continue
                ratio = f"{r['denoise_s'] / reference:7.2f}" if reference else f"{'-':>7}"
                over_budget = size == "3840x2160" and r["peak_mib"] > PEAK_BUDGET_MIB
                over = "  over the 4 GiB budget" if over_budget else ""
                print(f"{size:<10} {name:<24} {r['total_s']:8.2f} {r['denoise_s']:10.2f} {ratio} "
                      f"{r['peak_mib']:9.0f}{over}", flush=True)


if __name__ == "__main__":
    main()
