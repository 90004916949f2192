#!/usr/bin/env bash
# The GPU measurements, in one run, on a machine with jax/flax/optax and the
# working tree (no install needed): bash benchmarks/gpu.sh [OUTPUT_DIR]
set -uo pipefail
out=${1:-${OUT:-/tmp/bort-gpu}}
mkdir -p "$out"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/device.txt"
python -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" | tee -a "$out/device.txt"
date -u | tee -a "$out/device.txt"
timeout 300 python benchmarks/train_step.py --models resnet50 --batch-size 128 --iterations 20 --repeats 5 \
  --json "$out/train_step_resnet50.json" 2>&1 | tee "$out/train_step_resnet50.md"
timeout 150 python benchmarks/optimizer_overhead.py --models resnet50 deit_s --iterations 20 --repeats 5 \
  --json "$out/optimizer_overhead.json" 2>&1 | tee "$out/optimizer_overhead.md"
timeout 120 python benchmarks/train_step.py --models deit_s --batch-size 128 --iterations 20 --repeats 5 \
  --optimizers adamw bort_adamw --json "$out/train_step_deit_s.json" 2>&1 | tee "$out/train_step_deit_s.md"
