#!/usr/bin/env python
"""CPU time of each architecture's exported graph with onnxruntime at 1080p, next to Intel OIDN.

    python benchmarks/bench_archs.py [--configs fast kpcn ...] [--repeats 3]      # needs .[train]

Weights are random (time does not depend on them). Each model runs on a 1920x1080 frame in one piece
with onnxruntime's default CPU threads, after a warm-up run; the median of ``--repeats`` runs is reported.
Models over ``--crop-above`` GFLOP per megapixel run on a 480x270 crop instead and are scaled by the
pixel count (x16), marked "crop" (a full KPCN frame takes minutes). OIDN (pyoidn, RT filter, hdr,
quality high, colour + albedo + normal) is timed in the same run on the same machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from training.archs.summary import flops_per_megapixel, parameter_count
from training.config import load_config
from training.export import export_onnx
from training.graph import build_graph, example_inputs

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"
DEFAULT = ["fast", "kpcn", "kprcn", "kprcan", "kprcan_4block", "direct_cnn", "direct_rcn", "direct_rcan"]
FRAME = (1080, 1920)
CROP = (270, 480)


def timed(run, repeats: int) -> float:
    run()  # warm-up: allocations, kernel selection
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_model(name: str, repeats: int, crop_above: float, folder: Path) -> dict:
    import onnxruntime as ort
    import torch

    torch.manual_seed(0)
    config = load_config(CONFIGS / f"{name}.yaml")
    graph = build_graph(config).eval()
    gflop = flops_per_megapixel(graph) / 1e9
    cropped = gflop > crop_above
    height, width = CROP if cropped else FRAME
    multiple = graph.size_multiple
    height, width = -(-height // multiple) * multiple, -(-width // multiple) * multiple
    path = folder / f"{name}.onnx"
    export_onnx(graph, config, path, name)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = {k: v.numpy() for k, v in example_inputs(graph, height, width).items()}
    seconds = timed(lambda: session.run(None, inputs), repeats)
    return {"name": name, "architecture": config.model["type"], "parameters": parameter_count(graph),
            "gflop_per_mp": gflop, "radius": graph.receptive_radius, "size": f"{width}x{height}",
            "cropped": cropped, "seconds_1080p": seconds * (FRAME[0] * FRAME[1]) / (height * width)}


def bench_oidn(repeats: int) -> float:
    import pyoidn

    rng = np.random.default_rng(0)
    color = np.ascontiguousarray(rng.random((*FRAME, 3), dtype=np.float32) * 2)
    albedo = np.ascontiguousarray(rng.random((*FRAME, 3), dtype=np.float32))
    normal = np.ascontiguousarray(rng.random((*FRAME, 3), dtype=np.float32) * 2 - 1)
    return timed(lambda: pyoidn.denoise(color, albedo, normal, hdr=True, quality="high"), repeats)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=DEFAULT, help="config names in training/configs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--crop-above", type=float, default=500.0, help="GFLOP/MP above which to time a crop")
    args = parser.parse_args(argv)
    oidn = bench_oidn(args.repeats)
    print(f"OIDN (pyoidn, 1920x1080, hdr, quality high): {oidn:.2f} s", flush=True)
    print("| model | architecture | parameters | GFLOP/MP | receptive radius | timed on | "
          "s per 1080p frame | x OIDN |\n|---|---|---:|---:|---:|---|---:|---:|", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for name in args.configs:
            r = bench_model(name, args.repeats, args.crop_above, Path(folder))
            note = f"{r['size']} crop, x16" if r["cropped"] else r["size"]
            print(f"| {r['name']} | {r['architecture']} | {r['parameters']:,} | {r['gflop_per_mp']:.0f} | "
                  f"{r['radius']} | {note} | {r['seconds_1080p']:.2f} | {r['seconds_1080p'] / oidn:.1f} |",
                  flush=True)
    print(f"| OIDN 2 (pyoidn) | UNet | | | | 1920x1080 | {oidn:.2f} | 1.0 |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
