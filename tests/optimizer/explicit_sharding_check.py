"""Bort on a 2 x 4 mesh of 8 CPU devices, explicit and auto axes.

Run by ``test_explicit_sharding.py`` in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``; it can be run by hand
the same way. Dense and Conv kernels are sharded on their fan-in, on their
output axis, or on both, over a ``('data', 'model')`` mesh, and jitted steps of
``bort_sgd``, ``bort_adamw`` and ``add_bort_correction`` chained with Lion run
in three placements:

* ``explicit``: ``jax.make_mesh(..., axis_types=(Explicit, Explicit))`` and
  ``jax.set_mesh``, with kernels batched (the default) and one by one;
* ``auto``: the same mesh with auto axes (``jax.device_put`` with
  ``NamedSharding``), with the default options;
* ``single``: one device, one by one: the reference values.

Every step is waited for. Prints one JSON document on the last line of stdout:
``{"device_count", "records": [...], "concatenates": {...}}``; each record has
``optimizer, variant, step, kind, leaf, expected, got, equivalent`` and, for
params and updates, ``max_abs_diff`` and ``max_abs_value`` against the
single-device run. ``concatenates`` lists the result types of the
``concatenate`` operations in each explicit variant's jaxpr (batched kernels
are stacked by one).
"""

import json
import re

import jax
import numpy as np
import optax
from jax.sharding import AxisType
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import bort_jax
from mesh_testing import is_spec
from mesh_testing import make_tree as make_layout_tree
from mesh_testing import mesh_devices
from mesh_testing import path_str
from mesh_testing import sharding_record

NUM_STEPS = 2
MESH_SHAPE = (2, 4)
AXES = ('data', 'model')

# leaf -> (shape, partition spec over ('data': 2, 'model': 4)).
LAYOUT = {
    'dense_out': {
        'kernel': ((16, 8), P(None, 'model')),
        'bias': ((8,), P('model')),
    },
    # Same matrix shape and spec as dense_out: batched with it by default.
    'dense_out_twin': {'kernel': ((16, 8), P(None, 'model'))},
    'dense_fan_in': {'kernel': ((16, 8), P('data', None))},
    'dense_both': {'kernel': ((16, 8), P('data', 'model'))},
    'dense_replicated': {'kernel': ((16, 8), P())},
    'wide_out': {
        'kernel': ((4, 16), P(None, 'model'))
    },  # Gram on the fan-in side
    'conv_out': {'kernel': ((3, 3, 4, 8), P(None, None, None, 'model'))},
    'conv_fan_in': {'kernel': ((3, 3, 4, 8), P(None, None, 'model', None))},
    'conv_both': {'kernel': ((3, 3, 4, 8), P(None, None, 'data', 'model'))},
}

OPTIMIZERS = {
    'bort_sgd': lambda batch: bort_jax.bort_sgd(
        1e-2,
        gamma=0.05,
        momentum=0.9,
        weight_decay=1e-3,
        amplitude='adaptive',
        batch_kernels=batch,
    ),
    'bort_adamw': lambda batch: bort_jax.bort_adamw(
        1e-2, gamma=0.1, weight_decay=1e-2, batch_kernels=batch
    ),
    'lion_chain': lambda batch: optax.chain(
        optax.scale_by_lion(),
        bort_jax.add_bort_correction(0.1, batch_kernels=batch),
        optax.scale_by_learning_rate(1e-2),
    ),
}

# variant -> (placement, batch_kernels)
VARIANTS = {
    'single': ('single', False),
    'explicit_batched': ('explicit', True),
    'explicit_one_by_one': ('explicit', False),
    'auto_default': ('auto', True),
}


def make_tree(seed, scale):
  return make_layout_tree(LAYOUT, seed, scale)


def specs_tree():
  return jax.tree.map(lambda leaf: leaf[1], LAYOUT, is_leaf=is_spec)


def run(factory, batch, place, params, grads, mesh):
  """Jitted steps; returns [(updates, params, state)] per step, all waited for."""
  tx = factory(batch)

  @jax.jit
  def train_step(p, state, g):
    updates, state = tx.update(g, state, p)
    return optax.apply_updates(p, updates), updates, state

  p = place(params)
  state = jax.jit(tx.init)(p)
  history = []
  concatenates = None
  for step in range(NUM_STEPS):
    g = place(grads[step])
    if step == 0 and mesh is not None:
      jaxpr = str(jax.make_jaxpr(train_step)(p, state, g))
      concatenates = re.findall(r':(\w+\[[^\]]*\]) = concatenate', jaxpr)
    p, updates, state = jax.block_until_ready(train_step(p, state, g))
    history.append((updates, p, state))
  return history, concatenates


def record(optimizer, variant, *fields):
  """One leaf's sharding record (see :func:`mesh_testing.sharding_record`)."""
  return sharding_record({'optimizer': optimizer, 'variant': variant}, *fields)


def main():
  devices = mesh_devices()
  explicit_mesh = jax.make_mesh(
      MESH_SHAPE, AXES, axis_types=(AxisType.Explicit,) * 2
  )
  auto_mesh = jax.make_mesh(MESH_SHAPE, AXES, axis_types=(AxisType.Auto,) * 2)
  specs = specs_tree()

  def put_with(shardings):
    return lambda tree: jax.device_put(tree, shardings)

  def named_shardings(mesh):
    """``specs`` as ``NamedSharding``s on ``mesh``."""
    return jax.tree.map(
        lambda s: NamedSharding(mesh, s),
        specs,
        is_leaf=lambda x: isinstance(x, P),
    )

  single = jax.sharding.SingleDeviceSharding(devices[0])
  params = make_tree(0, 0.3)
  grads = [make_tree(step + 1, 0.5) for step in range(NUM_STEPS)]
  leaf_specs = {
      path_str(path): s
      for path, s in jax.tree_util.tree_flatten_with_path(
          specs, is_leaf=lambda x: isinstance(x, P)
      )[0]
  }

  records, concatenates = [], {}
  for name, factory in OPTIMIZERS.items():
    results = {}
    for variant, (where, batch) in VARIANTS.items():
      if where == 'explicit':
        with jax.set_mesh(explicit_mesh):
          shardings = named_shardings(explicit_mesh)
          history, count = run(
              factory, batch, put_with(shardings), params, grads, explicit_mesh
          )
        concatenates[f'{name}/{variant}'] = count
      elif where == 'auto':
        shardings = named_shardings(auto_mesh)
        history, _ = run(
            factory, batch, put_with(shardings), params, grads, None
        )
      else:
        history, _ = run(factory, batch, put_with(single), params, grads, None)
      results[variant] = (history, shardings if where != 'single' else None)

    reference = results['single'][0]
    for variant, (history, shardings) in results.items():
      if variant == 'single':
        continue
      flat_shardings = {
          path_str(p): s
          for p, s in jax.tree_util.tree_flatten_with_path(
              shardings, is_leaf=lambda x: isinstance(x, NamedSharding)
          )[0]
      }
      for step in range(NUM_STEPS):
        (ref_updates, ref_params, _), (updates, new_params, state) = (
            reference[step],
            history[step],
        )
        for kind, tree, ref in (
            ('param', new_params, ref_params),
            ('update', updates, ref_updates),
        ):
          for (path, leaf), ref_leaf in zip(
              jax.tree_util.tree_flatten_with_path(tree)[0],
              jax.tree.leaves(ref),
          ):
            leaf_name = path_str(path)
            records.append(
                record(
                    name,
                    variant,
                    step,
                    kind,
                    leaf_name,
                    flat_shardings[leaf_name],
                    leaf,
                    ref_leaf,
                )
            )
        for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
          names = path_str(path)
          matches = [k for k in leaf_specs if names.endswith('/' + k)]
          if matches and leaf.ndim:
            records.append(
                record(
                    name,
                    variant,
                    step,
                    'state',
                    names,
                    flat_shardings[matches[0]],
                    leaf,
                    None,
                )
            )
  # The orthogonality report of the sharded params, jitted, vs one device.
  report = jax.jit(bort_jax.summarize_report)(
      bort_jax.orthogonality_report(jax.device_put(params, single))
  )
  single_corrections = {
      path_str(p): np.asarray(
          bort_jax.bort_correction(jax.device_put(leaf, single))
      )
      for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
      if leaf.ndim >= 2
  }
  with jax.set_mesh(explicit_mesh):
    sharded = jax.device_put(
        params,
        jax.tree.map(
            lambda s: NamedSharding(explicit_mesh, s),
            specs,
            is_leaf=lambda x: isinstance(x, P),
        ),
    )
    sharded_report = jax.block_until_ready(
        jax.jit(
            lambda p: bort_jax.summarize_report(
                bort_jax.orthogonality_report(p)
            )
        )(sharded)
    )
    # The pure function, jitted on each sharded kernel: its sharding kept,
    # its value that of one device.
    kernels = {
        path_str(p): leaf
        for p, leaf in jax.tree_util.tree_flatten_with_path(sharded)[0]
        if leaf.ndim >= 2
    }
    correction_records = []
    for leaf_name, kernel in kernels.items():
      delta = jax.block_until_ready(jax.jit(bort_jax.bort_correction)(kernel))
      ref = single_corrections[leaf_name]
      correction_records.append(
          dict(
              leaf=leaf_name,
              equivalent=bool(
                  delta.sharding.is_equivalent_to(kernel.sharding, delta.ndim)
              ),
              max_abs_diff=float(np.max(np.abs(np.asarray(delta) - ref))),
              max_abs_value=float(np.max(np.abs(ref))),
          )
      )
    # split_axis naming an axis the mesh does not have: refused while
    # tracing (dense_replicated is replicated, so it would be split).
    wrong_split = bort_jax.bort_adamw(1e-2, gamma=0.1, split_axis='batch')
    try:
      jax.jit(wrong_split.update)(sharded, wrong_split.init(sharded), sharded)
      split_error = None
    except ValueError as error:
      split_error = str(error)
  report_diff = max(
      abs(float(sharded_report[k]) - float(report[k])) for k in report
  )
  print(
      json.dumps(
          {
              'device_count': len(devices),
              'records': records,
              'concatenates': concatenates,
              'report_max_abs_diff': report_diff,
              'bort_correction': correction_records,
              'split_error': split_error,
          }
      )
  )


if __name__ == '__main__':
  main()
