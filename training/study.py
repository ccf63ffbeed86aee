#!/usr/bin/env python
"""The architecture and baseline study of docs/experiments.md: every run on the same data and budget.

    python -m training.study run [--only NAME ...] [--root runs/study]     # train (resumes, skips done)
    python -m training.study report [--root runs/study]                    # markdown table to stdout

Each run is ``train.py --config <its configs> --config training/configs/study.yaml`` in
``runs/study/<name>``, so it resumes like any run and its folder holds the complete config. The report
reads each run's ``metrics.jsonl`` (written at every validation by train.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent / "configs"
OVERLAY = "study.yaml"

# (run name, model config, overrides, what the run tests)
RUNS: list[tuple[str, str, list[str], str]] = [
    ("kpcn", "kpcn.yaml", [], "KPCN, L1 loss: the baseline"),
    ("kpcn_seed1", "kpcn.yaml", ["train.seed=1"], "the baseline with another seed: run-to-run noise"),
    ("direct_cnn", "direct_cnn.yaml", [], "KPCN's network predicting colour directly (DPCN)"),
    ("kpcn_tonemapped_loss", "kpcn.yaml", ["loss.range=tonemapped"], "loss on clamped sRGB, not HDR"),
    ("kprcn", "kprcn.yaml", [], "residual blocks"),
    ("kprcan_4block", "kprcan_4block.yaml", [],
     "residual channel-attention blocks at KPCN's depth (attention: radius 78 px, not 18)"),
    ("kprcan_4block_tail5", "kprcan_4block.yaml", ["model.tail_kernel_size=5"],
     "the same with KPCN's 5x5 kernel-predicting layer instead of 1x1"),
    ("kpcn_batchnorm", "ablation_kpcn_batchnorm.yaml", [], "batch norm after hidden convolutions"),
    ("kpcn_dropout", "ablation_kpcn_dropout.yaml", [], "channel dropout 0.1"),
    ("kpcn_deep", "ablation_kpcn_deep.yaml", [], "13 layers instead of 9"),
    ("kpcn_combined_loss", "ablation_kpcn_combined_loss.yaml", [], "0.16 L1 + 0.84 (1 - SSIM)"),
    ("kpcn_lr_reduction", "ablation_kpcn_lr_reduction.yaml", [], "halve lr on validation plateau"),
]


def run_command(name: str, config: str, overrides: list[str], root: Path) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve().parent / "train.py"), "--no-progress",
               "--run-dir", str(root / name)]
    if not (root / name / "config.json").exists():  # a started run resumes with its stored config
        command += ["--config", str(CONFIGS / config), "--config", str(CONFIGS / OVERLAY)]
    for override in overrides:
        command += ["--set", override]
    return command


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def finished(run_dir: Path) -> bool:
    rows, config = read_metrics(run_dir), run_dir / "config.json"
    return bool(rows) and rows[-1]["step"] >= json.loads(config.read_text())["train"]["steps"]


def parameter_count(run_dir: Path) -> int:
    from training.config import load_config_json
    from training.graph import build_graph
    graph = build_graph(load_config_json(run_dir / "config.json"))
    return sum(p.numel() for p in graph.parameters())


def report(root: Path) -> str:
    lines = ["| run | what it tests | parameters | steps | best val PSNR dB (step) | final val PSNR dB "
             "| final val L1 | final val relMSE | train minutes |",
             "|---|---|---|---|---|---|---|---|---|"]
    noisy = None
    for name, _config, _overrides, purpose in RUNS:
        rows = read_metrics(root / name)
        if not rows:
            lines.append(f"| {name} | {purpose} | | not run | | | | | |")
            continue
        best, last = max(rows, key=lambda r: r["psnr"]), rows[-1]
        noisy = last["noisy_psnr"]
        lines.append(f"| {name} | {purpose} | {parameter_count(root / name):,} | {last['step']} "
                     f"| {best['psnr']:.2f} ({best['step']}) | {last['psnr']:.2f} | {last['l1']:.4f} "
                     f"| {last['relmse']:.4f} | {last['seconds'] / 60:.1f} |")
    if noisy is not None:
        lines.append(f"\nNoisy input on the same validation images: {noisy:.2f} dB.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["run", "report"])
    parser.add_argument("--root", default="runs/study", type=Path, help="folder of the study's runs")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these runs only")
    args = parser.parse_args(argv)
    known = [name for name, *_ in RUNS]
    unknown = sorted(set(args.only or []) - set(known))
    if unknown:
        print(f"study: unknown run {unknown[0]} (known: {', '.join(known)})", file=sys.stderr)
        return 2
    if args.action == "report":
        print(report(args.root))
        return 0
    for name, config, overrides, _purpose in RUNS:
        if (args.only and name not in args.only) or finished(args.root / name):
            continue
        print(f"study: {name}", flush=True)
        code = subprocess.call(run_command(name, config, overrides, args.root))
        if code != 0:
            print(f"study: {name} failed with exit code {code}", file=sys.stderr)
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
