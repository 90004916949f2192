"""Per-device FLOPs of the Bort correction on a mesh, from the compiled update.

Counts, with ``compiled.cost_analysis()`` (deterministic, no timing), the
floating-point operations one device executes for a jitted ``bort_adamw``
update, minus those of ``optax.adamw`` on the same placement: the
correction's share of that device. Placements, on ``--devices`` CPU devices
(one mesh axis, ``data``):

* ``single``: one device; the whole correction, ``total``;
* ``auto fsdp`` / ``explicit fsdp``: every kernel sharded on its largest axis
  divisible by the device count (FSDP style), other leaves replicated, on an
  auto-axes mesh (``jax.device_put`` onto ``NamedSharding``) and on an
  explicit-axes mesh (``jax.set_mesh``);
* ``auto replicated`` / ``explicit replicated``: every leaf replicated (data
  parallelism), without and with ``split_axis='data'``.

Each figure is printed with its ratio to the ideal share, ``total / devices``,
``total`` being the single-device figure.
The updates of every placement are compared with the single-device update
(largest absolute difference over the largest absolute value). Run:

  python benchmarks/correction_flops.py --model resnet50

(``--model mixed`` is a handful of small kernels of different shapes, for the
tests). The script sets ``XLA_FLAGS=--xla_force_host_platform_device_count``
itself before importing JAX.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _parse(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='resnet50')
  parser.add_argument('--devices', type=int, default=8)
  parser.add_argument(
      '--no-values',
      action='store_true',
      help='skip running the updates (FLOP counts only)',
  )
  parser.add_argument(
      '--no-split',
      action='store_true',
      help='skip the split_axis placements (for versions without it)',
  )
  parser.add_argument('--json', help='also write the results to this file')
  return parser.parse_args(argv)


# leaf path -> shape, for --model mixed: sizes that differ by 100x, a fan-in
# (147) and a head (10 units) that 8 does not divide, a wide layer.
MIXED_SHAPES = {
    'stem': {'kernel': (7, 7, 3, 16), 'bias': (16,)},
    'block1': {'kernel': (3, 3, 16, 16)},
    'block2': {'kernel': (3, 3, 16, 16)},
    'expand': {'kernel': (1, 1, 16, 64)},
    'reduce': {'kernel': (1, 1, 64, 16)},
    'big': {'kernel': (3, 3, 32, 64)},
    'head': {'kernel': (64, 10), 'bias': (10,)},
}

LEARNING_RATE, GAMMA, WEIGHT_DECAY = 1e-3, 0.1, 0.05


def main(argv=None):
  args = _parse(argv)
  flag = f'--xla_force_host_platform_device_count={args.devices}'
  if flag not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = (
        os.environ.get('XLA_FLAGS', '') + ' ' + flag
    ).strip()
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')

  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from jax.sharding import AxisType  # pylint: disable=import-outside-toplevel
  from jax.sharding import NamedSharding  # pylint: disable=import-outside-toplevel
  from jax.sharding import PartitionSpec as P  # pylint: disable=import-outside-toplevel

  import bort_jax  # pylint: disable=import-outside-toplevel

  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import optimizer_overhead  # pylint: disable=import-outside-toplevel

  devices = jax.devices()
  if len(devices) != args.devices:
    raise SystemExit(f'expected {args.devices} devices, got {len(devices)}')

  if args.model == 'mixed':
    shapes = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s, jnp.float32),
        MIXED_SHAPES,
        is_leaf=lambda x: isinstance(x, tuple),
    )
  else:
    shapes = optimizer_overhead.parameter_shapes(args.model)
  params = optimizer_overhead.random_like(shapes, jnp.float32)
  grads = optimizer_overhead.random_like(shapes, jnp.float32, seed=1)
  total_gflop = optimizer_overhead.correction_flops(params) / 1e9
  kernels = bort_jax.default_mask(params)

  def fsdp_spec(leaf, is_kernel):
    if not is_kernel:
      return P()
    divisible = [a for a, n in enumerate(leaf.shape) if n % args.devices == 0]
    if not divisible:
      return P()
    axis = max(divisible, key=lambda a: (leaf.shape[a], a))
    return P(*[('data' if a == axis else None) for a in range(leaf.ndim)])

  fsdp = jax.tree.map(fsdp_spec, params, kernels)
  replicated = jax.tree.map(lambda _: P(), params)

  def optimizers(split_axis):
    return {
        'adamw': optax.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY),
        'bort_adamw': bort_jax.bort_adamw(
            LEARNING_RATE,
            gamma=GAMMA,
            weight_decay=WEIGHT_DECAY,
            **({} if split_axis is None else dict(split_axis=split_axis)),
        ),
    }

  def measure(kind, specs, split_axis):
    """(per-device correction GFLOP, bort_adamw updates) for one placement."""
    if kind == 'single':
      shardings = jax.tree.map(
          lambda _: jax.sharding.SingleDeviceSharding(devices[0]), params
      )
      mesh = None
    else:
      axis_type = AxisType.Explicit if kind == 'explicit' else AxisType.Auto
      mesh = jax.make_mesh((args.devices,), ('data',), axis_types=(axis_type,))
      shardings = jax.tree.map(
          lambda s: NamedSharding(mesh, s),
          specs,
          is_leaf=lambda x: isinstance(x, P),
      )
    flops, updates = {}, None
    for name, tx in optimizers(split_axis).items():
      placed_params = jax.device_put(params, shardings)
      placed_grads = jax.device_put(grads, shardings)
      context = jax.set_mesh(mesh) if kind == 'explicit' else _nullcontext()
      with context:
        state = jax.jit(tx.init)(placed_params)
        update = jax.jit(tx.update)
        compiled = update.lower(placed_grads, state, placed_params).compile()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        flops[name] = cost['flops']
        if name == 'bort_adamw' and not args.no_values:
          updates, _ = jax.block_until_ready(
              compiled(placed_grads, state, placed_params)
          )
          updates = jax.tree.map(np.asarray, updates)
    return (flops['bort_adamw'] - flops['adamw']) / 1e9, updates

  placements = {
      'single': ('single', None, None),
      'auto fsdp': ('auto', fsdp, None),
      'explicit fsdp': ('explicit', fsdp, None),
      'auto replicated': ('auto', replicated, None),
      'explicit replicated': ('explicit', replicated, None),
      'auto replicated, split_axis': ('auto', replicated, 'data'),
      'explicit replicated, split_axis': ('explicit', replicated, 'data'),
  }
  if args.no_split:
    placements = {k: v for k, v in placements.items() if v[2] is None}
  results = {}
  reference, measured_total = None, None
  for name, (kind, specs, split_axis) in placements.items():
    gflop, updates = measure(kind, specs, split_axis)
    measured_total = gflop if measured_total is None else measured_total
    row = dict(
        per_device_gflop=gflop, ratio=gflop / (measured_total / args.devices)
    )
    if updates is not None:
      if reference is None:
        reference = updates
      diff = max(
          float(np.max(np.abs(a - b)))
          for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(reference))
      )
      scale = max(float(np.max(np.abs(b))) for b in jax.tree.leaves(reference))
      row['max_abs_diff'], row['max_abs_value'] = diff, scale
    results[name] = row

  print(
      f'# {args.model}: l2-full correction {measured_total:.3f} GFLOP on one '
      f'device ({total_gflop:.3f} in its matmuls); ideal share of one of '
      f'{args.devices} CPU devices {measured_total / args.devices:.3f} GFLOP; '
      f'jax {jax.__version__}'
  )
  print(
      '| placement | correction GFLOP per device | vs total / devices | '
      'update vs one device (max abs diff / max abs value) |'
  )
  print('|---|---|---|---|')
  for name, row in results.items():
    relative = (
        f"{row['max_abs_diff'] / row['max_abs_value']:.1e}"
        if 'max_abs_diff' in row
        else 'not run'
    )
    print(
        f"| {name} | {row['per_device_gflop']:.3f} | {row['ratio']:.3f}x | "
        f'{relative} |'
    )
  output = dict(
      model=args.model,
      devices=args.devices,
      total_gflop=measured_total,
      matmul_gflop=total_gflop,
      jax=jax.__version__,
      placements=results,
  )
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(output, f, indent=1)
  print(json.dumps(output))


class _nullcontext:  # pylint: disable=invalid-name

  def __enter__(self):
    return None

  def __exit__(self, *exc):
    return False


if __name__ == '__main__':
  main()
