#!/usr/bin/env bash
# Every GPU check in one go, on a machine with a CUDA GPU: the training tests (they train on the GPU
# there, in bf16), the demo's runs trained again on the GPU beside the workflow's own (run the demo
# first, or point MODELS and METRICS at its outputs), the training throughput benchmark (real tokens,
# the demo's length distribution, packing, compile) and the GPU experiment (benchmarks/gpu_experiment.py).
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
# where TLM's gain appears: small preset, tlm / task_only / random at three stage-1 budgets, 3 seeds,
# the trainings sharing the card (results/bench/gpu_experiment.md and the quality-vs-FLOPs plot)
python3 benchmarks/gpu_experiment.py --share 9 --cores 16 --out "$OUT/gpu_experiment.md" 2>&1 | tail -40 || status=1
cp results/plots/debian_sections/quality_vs_flops.png "$OUT/" || status=1
exit $status
