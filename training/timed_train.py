#!/usr/bin/env python
"""Train a config for a fixed wall-clock budget: a lent GPU for a few minutes, a night on a workstation.

    python training/timed_train.py --config training/configs/quality.yaml --minutes 6 --run-dir runs/quality
                                   [--set data.train=[data/bundle/train-full] ...] [--probe-steps 60]

A learning-rate schedule needs its length up front, so a short probe run (in a temporary folder, thrown
away) measures the seconds per step, validation included, on this machine with these data; then
``train.steps`` (and the validation/checkpoint intervals, a tenth of it) is set so that the real run ends
inside the budget, and the run folder's config.json records the steps chosen. The real run is an ordinary
``train.py`` run: resume or extend it with ``train.py --run-dir ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.config import load_config
from training.train import train

SAFETY = 0.9  # share of the remaining budget planned for steps: the rest absorbs validation and saving


def with_train(config, **values):
    """``config`` with these ``train`` section values replaced."""
    return dataclasses.replace(config, train=dataclasses.replace(config.train, **values))


def seconds_per_step(config, probe_steps: int) -> float:
    """Seconds per step between the probe's two validations (after warm-up: cuDNN's algorithm search,
    the data workers' start), one validation included."""
    half = max(1, probe_steps // 2)
    probe = with_train(config, steps=2 * half, val_interval=half, checkpoint_interval=10**9,
                       log_interval=half)
    with tempfile.TemporaryDirectory(prefix="timed-probe-") as folder:
        train(probe, folder, progress=False)
        rows = [json.loads(line) for line in (Path(folder) / "metrics.jsonl").read_text().splitlines()]
    if len(rows) < 2:
        raise ValueError("the probe needs validation data (data.val) to time itself")
    # metrics.jsonl keeps milliseconds; a floor keeps an implausibly fast probe from planning without end
    return max(rows[-1]["seconds"] - rows[-2]["seconds"], 1e-3) / half


def plan_steps(budget_s: float, per_step_s: float, minimum: int = 100) -> int:
    """Steps that fit ``SAFETY`` of the budget, rounded down to a multiple of 100 (at least ``minimum``)."""
    steps = int(budget_s * SAFETY / per_step_s) // 100 * 100
    if steps < minimum:
        raise ValueError(f"{budget_s:.0f} s fit only {steps} steps at {per_step_s:.3f} s/step; "
                         "give more --minutes")
    return steps


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", required=True, help="YAML config (repeat to overlay)")
    parser.add_argument("--minutes", type=float, required=True, help="wall-clock budget, probe included")
    parser.add_argument("--run-dir", required=True, help="new run folder")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--probe-steps", type=int, default=60)
    args = parser.parse_args(argv)
    try:
        if (Path(args.run_dir) / "config.json").exists():
            raise ValueError(f"{args.run_dir} already holds a run: resume it with train.py --run-dir")
        config = load_config(args.config, args.set)
        per_step = seconds_per_step(config, args.probe_steps)
        remaining = args.minutes * 60 - (time.perf_counter() - started)
        steps = plan_steps(remaining, per_step)
        interval = max(100, steps // 10 // 100 * 100)
        config = with_train(config, steps=steps, val_interval=interval, checkpoint_interval=interval)
        print(f"timed_train: {per_step:.4f} s/step measured; {steps} steps planned in {remaining:.0f} s",
              file=sys.stderr, flush=True)
        result = train(config, args.run_dir, progress=False)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"timed_train: error: {error}", file=sys.stderr)
        return 2
    summary = {"steps": result["step"], "seconds_per_step": round(per_step, 5),
               "best_psnr": round(result["best_psnr"], 3), "skipped": result["skipped"],
               "wall_seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
