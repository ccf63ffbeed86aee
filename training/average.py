"""Weight averaging of a fine-tuned run with the weights it started from (WiSE-FT: Wortsman et al. 2022,
"Robust fine-tuning of zero-shot models", CVPR): every floating-point tensor, batch-norm statistics
included, becomes ``(1 - alpha) * start + alpha * fine-tuned``. A fine-tune on new views gains on some
kinds of scene and forgets others; the average keeps most of the gains and little of the forgetting
(docs/experiments.md, question 20: `fast` and `quality` of 2026-11-28 are such averages, alpha 0.5).

    python -m training.average runs/quality_gpu --start models/quality.safetensors --alpha 0.5 \\
        --run-dir runs/quality_averaged
    python -m training.export runs/quality_averaged -o models/quality.onnx

The new run folder holds the fine-tuned run's config.json and the averaged weights as its ``best``
checkpoint, so ``training.export`` (and ``train.py --init``) take it like any run. Both weight files must
belong to the same network (the same tensor names and shapes); an existing run folder is never
overwritten.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from training.checkpoint import RunFolder, atomic_write


def average_weights(start: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor],
                    alpha: float) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * start + alpha * tuned`` for floating-point tensors (in float64, stored in their
    own dtype); integer tensors (batch norm's step counters) are the fine-tune's."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if start.keys() != tuned.keys():
        only = sorted(set(start) ^ set(tuned))
        raise ValueError(f"the weights are of different networks (tensors in one only: {only[:3]})")
    mixed = {}
    for name, tensor in tuned.items():
        if start[name].shape != tensor.shape:
            raise ValueError(f"the weights are of different networks ({name}: "
                             f"{tuple(start[name].shape)} and {tuple(tensor.shape)})")
        if tensor.is_floating_point():
            mixed[name] = ((1 - alpha) * start[name].double() + alpha * tensor.double()).to(tensor.dtype)
        else:
            mixed[name] = tensor.clone()
    return mixed


def average_run(run_dir: str | Path, start: str | Path, alpha: float, out_dir: str | Path,
                tag: str | None = None) -> Path:
    """Write ``out_dir`` (config.json and checkpoints/best.safetensors): the run's checkpoint averaged
    with ``start``."""
    run, out = RunFolder(run_dir), RunFolder(out_dir)
    if out.config_path.exists():
        raise ValueError(f"{out.path} already holds a run; choose another --run-dir")
    if not run.config_path.is_file():
        raise ValueError(f"{run.path} holds no run (no config.json)")
    try:
        start_weights = load_file(str(start))
        tuned = load_file(str(run.weights_path(tag or run.best_or_latest())))
    except (OSError, ValueError, SafetensorError) as error:
        raise ValueError(f"cannot read weights: {error}") from None
    mixed = average_weights(start_weights, tuned, alpha)
    atomic_write(out.weights_path("best"), lambda tmp: save_file(
        mixed, str(tmp), metadata={"averaged": f"{1 - alpha:g} x {start} + {alpha:g} x {run.path}"}))
    atomic_write(out.config_path, lambda tmp: shutil.copyfile(run.config_path, tmp))  # last: marks it done
    return out.path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="the fine-tuned run folder")
    parser.add_argument("--start", required=True, help="the weights it started from (.safetensors)")
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of the fine-tune (default 0.5)")
    parser.add_argument("--run-dir", dest="out_dir", required=True, help="run folder to write")
    parser.add_argument("--tag", choices=["best", "latest"],
                        help="checkpoint of the run (default best, else latest)")
    args = parser.parse_args(argv)
    try:
        path = average_run(args.run_dir, args.start, args.alpha, args.out_dir, args.tag)
    except (ValueError, OSError) as error:
        print(f"average: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({1 - args.alpha:g} x {args.start} + {args.alpha:g} x {args.run_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
