"""A config's network holding the weights of a related design, written as a run folder without training.

    python -m training.adapt --config training/configs/fast_colour3.yaml --init models/fast.safetensors \\
        --run-dir runs/fast_colour3_adapted
    python -m training.export runs/fast_colour3_adapted -o models/fast.onnx

The weights load as ``train.py --init`` loads them (training/archs/unet.py): smaller kernels take the
central taps of larger ones, attention blocks the weights lack start as the identity, added signals as
the identity. Some such networks need no training at all: the colour kernels of `fast` and `quality`
cut from 5x5 to their central 3x3 taps at full resolution score within 0.04 dB of the 5x5 ones
(docs/experiments.md, question 21). Like a trained run, the folder holds the resolved config.json and
the weights as its ``best`` checkpoint, so ``training.export``, ``training.average`` and
``train.py --init`` take it; an existing run folder is never overwritten.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.archs.summary import parameter_count
from training.checkpoint import RunFolder, load_weights, save_weights, write_json
from training.config import load_config
from training.graph import build_graph


def adapt_run(config_path: str | Path, init: str | Path, out_dir: str | Path) -> Path:
    """Write ``out_dir``: the network of ``config_path`` with ``init``'s weights loaded into it."""
    out = RunFolder(out_dir)
    if out.config_path.exists():
        raise ValueError(f"{out.path} already holds a run; choose another --run-dir")
    config = load_config([Path(config_path)])
    graph = build_graph(config)
    load_weights(Path(init), graph)  # a design it cannot take is a clear ValueError
    save_weights(out.weights_path("best"), graph, {"adapted": f"{init} as {Path(config_path).name}",
                                                    "step": "0"})
    write_json(out.config_path, config.to_dict())  # last: marks the folder complete
    print(f"adapt: {parameter_count(graph):,} parameters from {init}")
    return out.path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the design (a training config, YAML or JSON)")
    parser.add_argument("--init", required=True, help="the weights to load into it (.safetensors)")
    parser.add_argument("--run-dir", dest="out_dir", required=True, help="run folder to write")
    args = parser.parse_args(argv)
    try:
        path = adapt_run(args.config, args.init, args.out_dir)
    except (ValueError, OSError) as error:
        print(f"adapt: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({args.init} in the network of {args.config})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
