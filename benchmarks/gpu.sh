#!/usr/bin/env bash
# The GPU comparison of Bort's cost (README, "What Bort costs in time"), in
# one run, on a machine with jax/flax/optax and the working tree
# (tensorflow-datasets and orbax are not needed):
#   bash benchmarks/gpu.sh [OUTPUT_DIR]
# A full jitted train step (benchmarks/train_step.py: forward, backward,
# update; batch 128, 224^2, bf16 compute, f32 params) of ResNet-50 and DeiT-S
# with adamw vs bort_adamw and sgd vs bort_sgd, each baseline compiled twice
# to show the compile-to-compile spread, Bort's kernels batched (the default)
# and one by one; then the optimizer update alone
# (benchmarks/optimizer_overhead.py). Each part has its own time limit and
# writes its own files, so a part that runs out of time leaves the others'
# results intact. About 8 minutes on an H100-class GPU.
set -uo pipefail
out=${1:-${OUT:-/tmp/bort-gpu}}
mkdir -p "$out"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$out/device.txt"
python -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" | tee -a "$out/device.txt"
git rev-parse HEAD 2>/dev/null | tee -a "$out/device.txt"
date -u | tee -a "$out/device.txt"
optimizers=(adamw "adamw recompiled" bort_adamw "bort_adamw one by one"
            sgd "sgd recompiled" bort_sgd)
for model in resnet50 deit_s; do
  start=$SECONDS
  timeout "${TRAIN_STEP_LIMIT:-200}" python benchmarks/train_step.py --models "$model" \
    --batch-size 128 --dtype bfloat16 --iterations 20 --repeats 5 \
    --optimizers "${optimizers[@]}" \
    --json "$out/train_step_$model.json" 2>&1 | tee "$out/train_step_$model.md"
  echo "# $model: $((SECONDS - start)) s" | tee -a "$out/device.txt"
done
start=$SECONDS
timeout "${OPTIMIZER_LIMIT:-120}" python benchmarks/optimizer_overhead.py --models resnet50 deit_s \
  --iterations 20 --repeats 5 --optimizers bort_adamw "bort_adamw one by one" bort_sgd \
  --json "$out/optimizer_overhead.json" 2>&1 | tee "$out/optimizer_overhead.md"
echo "# optimizer_overhead: $((SECONDS - start)) s" | tee -a "$out/device.txt"
