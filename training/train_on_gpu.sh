#!/bin/sh
# Train on a GPU machine (a rented cloud GPU, a workstation) for a wall-clock budget from a shard bundle,
# then time the trained graph at 1080p there. training/README.md, "Training on a rented GPU", gives the
# whole recipe: make the bundle where the shards are, set up the machine, run this, bring the run back.
#
#   sh training/train_on_gpu.sh BUNDLE MINUTES RUN_DIR [train.py options...]
#   sh training/train_on_gpu.sh quality-bundle.zip 10 runs/quality_gpu --init models/quality.safetensors
#   sh training/train_on_gpu.sh part1.zip,part2.zip 10 runs/quality_gpu ...   # a bundle in parts (--after)
#
# Run from the repository root, with the package installed (pip install -e ".[train]"). The bundle is
# unpacked into a temporary folder; the run trains on its TRAIN_SET folder (default train-full) and
# validates on VAL_SET (default val-full). CONFIG names the config (default models/quality.json: the
# shipped `quality`'s), PYTHON the interpreter. Everything the run leaves is in RUN_DIR (config.json,
# metrics.jsonl, tb/, checkpoints/): copy it back and export it with python -m training.export RUN_DIR.
set -eu
usage="usage: train_on_gpu.sh BUNDLE MINUTES RUN_DIR [train.py options...]"
BUNDLE=${1:?$usage}
MINUTES=${2:?$usage}
RUN=${3:?$usage}
shift 3
PY=${PYTHON:-python3}
CONFIG=${CONFIG:-models/quality.json}
DATA=$(mktemp -d)
trap 'rm -rf "$DATA"' EXIT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
# BUNDLE may name several parts, comma-separated (bundle --after); each folder's parts join unpacked
# (so no commas or spaces in their paths)
"$PY" -m training.datagen unbundle $(echo "$BUNDLE" | tr ',' ' ') --out "$DATA"
# --minutes plans the run to end inside the budget; the hard stop only guards against a stalled machine
status=0
timeout "$(awk "BEGIN{print int($MINUTES * 60 + 120)}")" "$PY" training/train.py --config "$CONFIG" \
    --minutes "$MINUTES" --run-dir "$RUN" \
    --set "data.train=[$DATA/${TRAIN_SET:-train-full}]" --set "data.val=[$DATA/${VAL_SET:-val-full}]" \
    "$@" || status=$?
"$PY" - "$RUN" <<'PY' || true
# inference time of the run's best (else latest) weights on one 1080p frame in torch, median of 3 (the
# frame padded to the network's size multiple, as the core's windows are: 1088 rows for a U-Net)
import sys
import time

import torch

from denoiser_core.tiling import round_up
from training.checkpoint import RunFolder, load_weights
from training.config import load_config_json
from training.graph import build_graph, example_inputs

run = RunFolder(sys.argv[1])
graph = build_graph(load_config_json(run.config_path))
load_weights(run.weights_path(run.best_or_latest()), graph)
device = "cuda" if torch.cuda.is_available() else "cpu"
size = tuple(round_up(n, graph.size_multiple) for n in ((1080, 1920) if device == "cuda" else (61, 61)))
# (on a CPU, 61x61 only checks that the weights run, through the same padding)
graph = graph.to(device).eval()
inputs = {k: v.to(device) for k, v in example_inputs(graph, *size).items()}
times = []
with torch.no_grad():
    for _ in range(4):  # the first run warms up (allocations, cuDNN's algorithm choice)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        graph(**inputs)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else 0
print(f"inference {size[1]}x{size[0]} on {device}: {sorted(times[1:])[1]:.3f} s median of 3, peak {peak:.0f} MiB")
PY
exit $status
