#!/usr/bin/env bash
# The GPU measurements, in one run, on a machine with jax/flax/optax and the
# working tree (tensorflow-datasets and orbax are not needed):
#   bash benchmarks/gpu.sh [OUTPUT_DIR]
# Each part has its own time limit and writes its own files, so a part that
# runs out of time leaves the others' results intact.
set -uo pipefail
out=${1:-${OUT:-/tmp/bort-gpu}}
mkdir -p "$out"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$out/device.txt"
python -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" | tee -a "$out/device.txt"
date -u | tee -a "$out/device.txt"
optimizers=(adamw "adamw recompiled" bort_adamw "bort_adamw adaptive" "bort_adamw batched" sgd bort_sgd)
for model in resnet50 deit_s; do
  start=$SECONDS
  timeout "${TRAIN_STEP_LIMIT:-250}" python benchmarks/train_step.py --models "$model" --batch-size 128 \
    --iterations 20 --repeats 5 --optimizers "${optimizers[@]}" \
    --json "$out/train_step_$model.json" 2>&1 | tee "$out/train_step_$model.md"
  echo "# $model: $((SECONDS - start)) s" | tee -a "$out/device.txt"
done
start=$SECONDS
timeout "${OPTIMIZER_LIMIT:-240}" python benchmarks/optimizer_overhead.py --models resnet50 deit_s \
  --iterations 20 --repeats 5 --optimizers bort_adamw "bort_adamw adaptive" bort_sgd \
  --json "$out/optimizer_overhead.json" 2>&1 | tee "$out/optimizer_overhead.md"
echo "# optimizer_overhead: $((SECONDS - start)) s" | tee -a "$out/device.txt"
