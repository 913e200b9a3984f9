#!/usr/bin/env bash
# Every GPU check in one go, for a machine with a CUDA GPU: install, a short end-to-end training
# run on the GPU (bf16, DDP when there are several GPUs), the training throughput benchmark.
# Writes its results under ${OUT:-results/gpu_check}.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/gpu_check}
mkdir -p "$OUT"
python -m pip install --quiet -e ".[test]"
nvidia-smi | tee "$OUT/nvidia-smi.txt"
python -m pytest -q tests/test_train.py 2>&1 | tee "$OUT/test_train.txt"
python benchmarks/train_throughput.py --presets tiny base --compile --out "$OUT/train_throughput.md"
