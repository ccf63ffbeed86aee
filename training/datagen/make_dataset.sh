#!/bin/sh
# The project's default dataset, rendered in the background (resumable: rerun the same command) and packed
# into the shard folders the configs in training/configs name:
#   mkdir -p data && nohup sh training/datagen/make_dataset.sh data > data/datagen.progress 2>&1 &
# Order: the held-back validation views first (training validates on them from the start), then three
# larger 256x256 views (OUT/bench256, also training data), then the training views; training can start on
# a partial set (pack by hand with the commands at the end) and picks up new shards when it resumes.
# Validation references: 2048 spp on 128x96 views (their remaining noise is measured and reported in
# docs/data.md). Training references: 256 spp (zero-mean target noise averages out in training, as in
# Noise2Noise); the first 14 training views were rendered with 512 spp references.
set -e
OUT=${1:-data}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
nice -n 5 "$PY" -m training.datagen render --out "$OUT" --split val --views 6 --resolution 128 96 \
    --ref-spp 2048 --jobs 1
nice -n 5 "$PY" -m training.datagen render --out "$OUT/bench256" --split test --views 3 \
    --resolution 256 256 --ref-spp 512 --jobs 1
nice -n 5 "$PY" -m training.datagen render --out "$OUT" --split train --views 300 --ref-spp 256 --jobs 1
# Packing is incremental (views already packed are kept) and takes seconds.
"$PY" -m training.datagen pack --out "$OUT" --split val --full          # OUT/packed/val-full
"$PY" -m training.datagen pack --out "$OUT" --split train --full        # OUT/packed/train-full (whole views)
"$PY" -m training.datagen pack --out "$OUT" --split train               # OUT/packed/train-p64 (64x64 patches)
"$PY" -m training.datagen pack --out "$OUT/bench256" --split test --full
"$PY" -m training.datagen pack --out "$OUT/bench256" --split test
# The same views with the residual (emission, environment) in the specular channels: OUT/packed/*-r, for
# configs with data.denoise_residual: true (docs/experiments.md, A/B of denoise_residual).
"$PY" -m training.datagen pack --out "$OUT" --split val --full --denoise-residual
"$PY" -m training.datagen pack --out "$OUT" --split train --full --denoise-residual
"$PY" -m training.datagen pack --out "$OUT/bench256" --split test --full --denoise-residual
# Specular demodulated too (OUT/packed/*-d-r), for training/configs/fast_demodulated.yaml.
"$PY" -m training.datagen pack --out "$OUT" --split val --full --denoise-residual --demodulate-specular
"$PY" -m training.datagen pack --out "$OUT" --split train --full --denoise-residual --demodulate-specular
"$PY" -m training.datagen pack --out "$OUT/bench256" --split test --full --denoise-residual --demodulate-specular
