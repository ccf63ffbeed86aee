#!/bin/sh
# The project's default dataset, rendered in the background (resumable: rerun the same command).
#   nohup sh training/datagen/make_dataset.sh data > data/datagen.progress 2>&1 &
# Order: the held-back validation views first (training validates on them from the start), then the
# training views; training can start on a partial set and pick up new shards when it resumes.
# Pack at any time with:
#   .venv/bin/python -m training.datagen pack --out data --split train
#   .venv/bin/python -m training.datagen pack --out data --split val --full
# Validation references: 2048 spp on 128x96 views (their remaining noise is measured and reported in
# docs/data.md). Training references: 256 spp (zero-mean target noise averages out in training, as in
# Noise2Noise); the first 14 training views were rendered with 512 spp references.
set -e
OUT=${1:-data}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
nice -n 5 "$PY" -m training.datagen render --out "$OUT" --split val --views 6 --resolution 128 96 \
    --ref-spp 2048 --jobs 1
nice -n 5 "$PY" -m training.datagen render --out "$OUT" --split train --views 300 --ref-spp 256 --jobs 1
