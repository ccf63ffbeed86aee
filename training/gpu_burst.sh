#!/bin/sh
# One short training burst on a lent GPU machine (the device tool; docs/experiments.md): unpack the shard
# bundle, train the quality model for a wall-clock budget, time it at 1080p, and leave the run's config,
# metrics and checkpoints in $OUT. Runs from the repository root; .whl holds the wheels the machine lacks
# (OpenEXR, which denoiser_core imports), .devdata/bundle.zip the data (training.datagen bundle).
#   sh training/gpu_burst.sh MINUTES [timed_train.py options...]
set -e
MINUTES=${1:?usage: gpu_burst.sh MINUTES [timed_train options]}
: "${OUT:?set OUT to the folder the results go to (the device tool sets it)}"
shift
PY=${PYTHON:-python3}
RUN=/tmp/quality_run
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
rm -rf /tmp/bundle "$RUN"
"$PY" -m training.datagen unbundle "${BUNDLE:-.devdata/bundle.zip}" --out /tmp/bundle
# the hard stop is a safety net: timed_train plans to end well inside MINUTES
timeout "$(awk "BEGIN{print int($MINUTES * 60 + 45)}")" "$PY" training/timed_train.py \
    --config training/configs/quality.yaml --minutes "$MINUTES" --run-dir "$RUN" \
    --set 'data.train=[/tmp/bundle/train-full]' --set 'data.val=[/tmp/bundle/val-full]' "$@" || true
for file in config.json metrics.jsonl checkpoints/best.safetensors checkpoints/latest.safetensors \
            checkpoints/latest.state.pt; do
    [ -f "$RUN/$file" ] && cp "$RUN/$file" "$OUT/"
done
RUN="$RUN" "$PY" - <<'PY' || true
# inference time of the best weights at 1080p in torch (fp32/TF32), this GPU
import os
import time

import torch
from training.checkpoint import load_weights
from training.config import load_config_json
from training.graph import build_graph
from training.archs.summary import example_inputs
run = os.environ["RUN"]
graph = build_graph(load_config_json(f"{run}/config.json"))
load_weights(f"{run}/checkpoints/best.safetensors", graph)
device = "cuda" if torch.cuda.is_available() else "cpu"
size = (1080, 1920) if device == "cuda" else (64, 64)
graph = graph.to(device).eval()
inputs = {k: v.to(device) for k, v in example_inputs(graph, *size).items()}
with torch.no_grad():
    graph(**inputs)
    times = []
    for _ in range(3):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        graph(**inputs)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else 0
print(f"inference {size[1]}x{size[0]} on {device}: {sorted(times)[1]:.3f} s median of 3, peak {peak:.0f} MiB")
PY
ls -la "$OUT"
