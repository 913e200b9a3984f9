#!/usr/bin/env bash
# Every GPU check in one go, on a machine with a CUDA GPU: the training tests (they train on the GPU
# there, in bf16), the demo's runs trained again on the GPU beside the workflow's own (run the demo
# first, or point MODELS and METRICS at its outputs), and the training throughput benchmark.
# Installs with pip; a machine that reaches no package index installs the wheels in .whl/ instead.
# Writes its results under ${OUT:-results/gpu_check}.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/gpu_check}
MODELS=${MODELS:-results/models/debian_sections}
METRICS=${METRICS:-results/metrics/debian_sections}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/tlm-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/tlm-site:$PWD/src
else
    python3 -m pip install --quiet -e ".[test]" || exit 1
fi
status=0
nvidia-smi | tee "$OUT/nvidia-smi.txt" || status=1
python3 -m pytest -q -p no:cacheprovider tests/test_train.py 2>&1 | tee "$OUT/test_train.txt" || status=1
python3 benchmarks/train_demo.py --models "$MODELS" --metrics "$METRICS" --runs tlm tlm_2k \
    --out "$OUT/train_demo.md" 2>&1 | tee "$OUT/train_demo.log" || status=1
python3 benchmarks/train_throughput.py --presets tiny base --batch 128 --steps 20 --compile \
    --out "$OUT/train_throughput.md" || status=1
exit $status
