"""Jitted optimizer-update time with and without Bort, side by side in one run.

For the parameter shapes of ResNet-50 and DeiT-S (taken from the project's
models with ``nnx.eval_shape``; nothing is allocated for the models
themselves) it times ``update + apply_updates`` (a jitted loop of ``--iterations``
updates, so dispatch costs nothing) of

* ``optax.adamw`` vs ``bort_jax.bort_adamw`` (fixed and adaptive amplitude,
  default and highest matmul precision; the default, kernels of equal shape
  batched, ``batch_kernels=True``, or one by one, ``batch_kernels=False``;
  the default batches on GPU and TPU and not on CPU) and vs
  ``minimal bort_adamw``, a hand-written BortA (:func:`minimal_bort_adamw`,
  the least the correction can cost), whose ratios are printed too;
* ``optax.sgd`` with momentum and coupled weight decay vs ``bort_jax.bort_sgd``
  (batched and one by one).

Measurements are interleaved (baseline, Bort, baseline, ...) and the median
and minimum of the repeats are reported, with the ratios to the baseline and
to the minimal BortA. Runs on CPU and GPU:

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
MINIMAL = 'minimal bort_adamw'
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


def minimal_bort_adamw(
    learning_rate: float, gamma: float, weight_decay: float
) -> optax.GradientTransformationExtraArgs:
  """A hand-written BortA: ``optax.adamw`` minus ``lr * gamma * Delta``.

  The least a correction can cost: each default-mask kernel read as
  ``M = kernel.reshape(-1, out)``, :math:`\Delta = M(M^\top M) - M` (or
  :math:`(MM^\top)M - M` when ``out > fan_in``), jitted with the update;
  the yardstick for ``bort_adamw``'s own cost.
  """
  adamw = optax.adamw(learning_rate, weight_decay=weight_decay)

  def update(updates, state, params):
    updates, state = adamw.update(updates, state, params)

    def add_correction(update, kernel, selected):
      if not selected:
        return update
      m = kernel.reshape(-1, kernel.shape[-1])
      n, d = m.shape
      delta = (m @ (m.T @ m) if d <= n else (m @ m.T) @ m) - m
      return update - learning_rate * gamma * delta.reshape(kernel.shape)

    mask = bort_jax.default_mask(params)
    return jax.tree.map(add_correction, updates, params, mask), state

  return optax.GradientTransformationExtraArgs(adamw.init, update)


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
          'bort_adamw batched': bort_jax.bort_adamw(
              LEARNING_RATE,
              gamma=GAMMA,
              weight_decay=WEIGHT_DECAY,
              batch_kernels=True,
          ),
          MINIMAL: minimal_bort_adamw(LEARNING_RATE, GAMMA, WEIGHT_DECAY),
          # The same program compiled twice: the spread between two
          # compilations and over the repeats, to read the ratios against.
          MINIMAL
          + ' recompiled': minimal_bort_adamw(
              LEARNING_RATE, GAMMA, WEIGHT_DECAY
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
    minimal = times.get(MINIMAL)
    for name, samples in times.items():
      median = statistics.median(samples)
      row = dict(
          model=model_name,
          dtype=jnp.dtype(dtype).name,
          family=family,
          optimizer=name,
          ms=1e3 * median,
          min_ms=1e3 * min(samples),
          ratio=median / baseline,
      )
      if minimal is not None:
        row['vs_minimal'] = median / statistics.median(minimal)
        row['vs_minimal_min'] = min(samples) / min(minimal)
      rows.append(row)
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
  print(
      '| model | params dtype | optimizer | ms / update (median) | min | '
      'vs baseline | vs minimal (median) | vs minimal (min) |'
  )
  print('|---|---|---|---|---|---|---|---|')
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
      versus = [
          f'{r[k]:.3f}x' if k in r else ''
          for k in ('vs_minimal', 'vs_minimal_min')
      ]
      print(
          f"| {r['model']} | {r['dtype']} | {r['optimizer']} | {r['ms']:.2f} | "
          f"{r['min_ms']:.2f} | {r['ratio']:.3f}x | {' | '.join(versus)} |",
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
