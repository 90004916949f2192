"""Jitted optimizer-update time with and without Bort, side by side in one run.

For the parameter shapes of ResNet-50 and DeiT-S (taken from the project's
models with ``nnx.eval_shape``; nothing is allocated for the models
themselves) it times ``update + apply_updates`` (a jitted loop of ``--iterations``
updates, so dispatch costs nothing) of

* ``optax.adamw`` vs ``bort_jax.bort_adamw`` (fixed and adaptive amplitude,
  default and highest matmul precision; kernels of equal shape batched, the
  default, or corrected one by one, ``batch_kernels=False``);
* ``optax.sgd`` with momentum and coupled weight decay vs ``bort_jax.bort_sgd``
  (batched and one by one).

Measurements are interleaved (baseline, Bort, baseline, ...) and the median
of the repeats is reported, with the ratio to the baseline. Runs on CPU and GPU:

  python benchmarks/optimizer_overhead.py --models resnet50 deit_s --dtype float32

``--optimizers`` keeps only the named Bort variants (baselines always run).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import bort_jax
from bort_jax import models
from bort_jax.optimizer import layout
from bort_jax.optimizer import masking

LEARNING_RATE = 1e-3
WEIGHT_DECAY = 0.05
GAMMA = 1e-4


def parameter_shapes(model_name: str):
  abstract = nnx.eval_shape(
      lambda: models.create_model(
          model_name, num_classes=1000, rngs=nnx.Rngs(0)
      )
  )
  return nnx.as_pure(nnx.state(abstract, nnx.Param))


def random_like(shapes, dtype, seed=0):
  leaves, treedef = jax.tree.flatten(shapes)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  arrays = [
      (
          jax.random.normal(k, s.shape, jnp.float32)
          / math.sqrt(max(1, math.prod(s.shape[:-1])))
      ).astype(dtype)
      for k, s in zip(keys, leaves)
  ]
  return jax.tree.unflatten(treedef, arrays)


def correction_flops(params) -> float:
  """Flops of the l2-full correction: 4·n·d·min(n, d) per [n, d] matrix."""
  leaves, _, selected = masking.select_leaves(params)
  total = 0.0
  for s in selected:
    b, n, d = layout.matrix_shape(leaves[s.index].shape, s.dimension_numbers)
    total += 4.0 * b * n * d * min(n, d)
  return total


def optimizer_pairs() -> dict[str, dict[str, optax.GradientTransformation]]:
  adamw = optax.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY)
  sgd = optax.chain(
      optax.add_decayed_weights(WEIGHT_DECAY), optax.sgd(0.1, momentum=0.9)
  )
  return {
      'adamw': {
          'adamw': adamw,
          'bort_adamw': bort_jax.bort_adamw(
              LEARNING_RATE, gamma=GAMMA, weight_decay=WEIGHT_DECAY
          ),
          'bort_adamw adaptive': bort_jax.bort_adamw(
              LEARNING_RATE,
              gamma=GAMMA,
              weight_decay=WEIGHT_DECAY,
              amplitude='adaptive',
          ),
          'bort_adamw precision=highest': bort_jax.bort_adamw(
              LEARNING_RATE,
              gamma=GAMMA,
              weight_decay=WEIGHT_DECAY,
              precision=jax.lax.Precision.HIGHEST,
          ),
          'bort_adamw one by one': bort_jax.bort_adamw(
              LEARNING_RATE,
              gamma=GAMMA,
              weight_decay=WEIGHT_DECAY,
              batch_kernels=False,
          ),
      },
      'sgd': {
          'sgd': sgd,
          'bort_sgd': bort_jax.bort_sgd(
              0.1, gamma=GAMMA, momentum=0.9, weight_decay=WEIGHT_DECAY
          ),
          'bort_sgd one by one': bort_jax.bort_sgd(
              0.1,
              gamma=GAMMA,
              momentum=0.9,
              weight_decay=WEIGHT_DECAY,
              batch_kernels=False,
          ),
      },
  }


def make_runner(tx, params, grads, iterations):
  """Times ``iterations`` updates inside one jitted loop (no dispatch overhead)."""

  def many_steps(params, state):
    def body(_, carry):
      params, state = carry
      updates, state = tx.update(grads, state, params)
      return optax.apply_updates(params, updates), state

    return jax.lax.fori_loop(0, iterations, body, (params, state))

  many_steps = jax.jit(many_steps, donate_argnums=(0, 1))
  carry = [jax.tree.map(jnp.copy, params), tx.init(params)]

  def run():
    start = time.perf_counter()
    carry[:] = jax.block_until_ready(many_steps(*carry))
    return (time.perf_counter() - start) / iterations

  return run


def bench_model(model_name, dtype, iterations, repeats, chosen=None):
  params = random_like(parameter_shapes(model_name), dtype)
  grads = random_like(parameter_shapes(model_name), dtype, seed=1)
  rows = []
  for family, txs in optimizer_pairs().items():
    txs = {
        n: tx
        for n, tx in txs.items()
        if chosen is None or n in chosen or n == family
    }
    if chosen is not None and set(txs) == {family}:
      continue
    runners = {
        name: make_runner(tx, params, grads, iterations)
        for name, tx in txs.items()
    }
    for run in runners.values():
      run()  # compile and warm up
    times = {name: [] for name in runners}
    for _ in range(repeats):
      for name, run in runners.items():
        times[name].append(run())
    baseline = statistics.median(times[family])
    for name, samples in times.items():
      median = statistics.median(samples)
      rows.append(
          dict(
              model=model_name,
              dtype=jnp.dtype(dtype).name,
              family=family,
              optimizer=name,
              ms=1e3 * median,
              ratio=median / baseline,
          )
      )
  return rows, correction_flops(params)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', nargs='+', default=['resnet50', 'deit_s'])
  parser.add_argument(
      '--dtype', default='float32', choices=['float32', 'bfloat16']
  )
  parser.add_argument('--iterations', type=int, default=5)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument(
      '--optimizers', nargs='+', help='only these (baselines always run)'
  )
  parser.add_argument('--json', help='also write the rows to this file')
  args = parser.parse_args(argv)

  device = jax.devices()[0]
  print(
      f'# {device.platform}: {device.device_kind}; jax {jax.__version__}; '
      f'{args.iterations} updates x {args.repeats} interleaved repeats, median'
  )
  print('| model | params dtype | optimizer | ms / update | vs baseline |')
  print('|---|---|---|---|---|')
  all_rows = []
  for model_name in args.models:
    rows, flops = bench_model(
        model_name,
        jnp.dtype(args.dtype),
        args.iterations,
        args.repeats,
        args.optimizers,
    )
    for r in rows:
      print(
          f"| {r['model']} | {r['dtype']} | {r['optimizer']} | {r['ms']:.2f} | "
          f"{r['ratio']:.3f}x |",
          flush=True,
      )
    print(
        f'# {model_name}: l2-full correction = {flops / 1e9:.1f} GFLOP per update'
    )
    all_rows += [dict(r, correction_gflop=flops / 1e9) for r in rows]
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(
          dict(device=str(device.device_kind), rows=all_rows), f, indent=1
      )


if __name__ == '__main__':
  main()
