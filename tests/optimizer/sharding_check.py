"""Sharded Bort updates on an 8-device CPU mesh, compared with one device.

Run by ``test_sharding.py`` in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (so the pytest process
keeps its single device); it can also be run by hand the same way. Prints one
JSON document on the last line of stdout:

  {"device_count": 8, "records": [{"optimizer", "step", "kind", "leaf",
   "expected", "got", "equivalent", "max_abs_diff", "max_abs_value"}, ...]}

``kind`` is ``param`` (after ``optax.apply_updates``), ``update`` or ``state``
(optimizer state leaves shaped like a param). XLA's CPU collectives can
deadlock or abort when many steps are in flight, so every step is waited for.
"""

import json
import time

# Importable from the working tree even when run by hand without an install.

import jax
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import bort_jax
from mesh_testing import is_spec
from mesh_testing import make_tree as make_layout_tree
from mesh_testing import mesh_devices
from mesh_testing import path_str
from mesh_testing import sharding_record

NUM_STEPS = 2

# leaf -> (shape, partition spec over the mesh axis 'x' of 8 devices)
LAYOUT = {
    # The three (16, 8) kernels have equal matrix shapes but the compiler
    # chooses their shardings (auto axes): the default batching must leave
    # them one by one, so that each keeps its own sharding.
    'out_sharded': {'kernel': ((16, 8), P(None, 'x')), 'bias': ((8,), P('x'))},
    'fan_in_sharded': {'kernel': ((16, 8), P('x', None))},
    'replicated': {'kernel': ((16, 8), P()), 'bias': ((8,), P())},
    'conv_fan_in': {'kernel': ((3, 3, 8, 16), P(None, None, 'x', None))},
    'wide_out': {
        'kernel': ((4, 16), P(None, 'x'))
    },  # wide: Gram on the fan-in side
}

OPTIMIZERS = {
    'bort_adamw': lambda: bort_jax.bort_adamw(
        1e-2, gamma=0.1, weight_decay=1e-2
    ),
    'bort_sgd': lambda: bort_jax.bort_sgd(
        1e-2, gamma=0.05, momentum=0.9, weight_decay=1e-3, amplitude='adaptive'
    ),
}


def make_tree(seed, scale):
  return make_layout_tree(LAYOUT, seed, scale)


def main():
  devices = mesh_devices()
  mesh = jax.sharding.Mesh(np.array(devices), ('x',))
  shardings = jax.tree.map(
      lambda leaf: NamedSharding(mesh, leaf[1]), LAYOUT, is_leaf=is_spec
  )
  single = jax.sharding.SingleDeviceSharding(devices[0])
  leaf_shardings = {
      path_str(path): s
      for path, s in jax.tree_util.tree_flatten_with_path(shardings)[0]
  }

  params = make_tree(0, 0.3)
  grads = [make_tree(step + 1, 0.5) for step in range(NUM_STEPS)]
  records = []
  timings = []
  for name, factory in OPTIMIZERS.items():
    results = {}
    for placement in ('single', 'sharded'):
      place = (
          (lambda tree: jax.device_put(tree, shardings))
          if placement == 'sharded'
          else (lambda tree: jax.device_put(tree, single))
      )
      tx = factory()

      @jax.jit
      def train_step(p, state, g, tx=tx):
        updates, state = tx.update(g, state, p)
        return optax.apply_updates(p, updates), updates, state

      p = place(params)
      state = tx.init(p)
      if (
          placement == 'single'
      ):  # commit the state too: no recompilation at step 2
        state = jax.device_put(state, single)
      history = []
      for step in range(NUM_STEPS):
        t = time.perf_counter()
        p, updates, state = jax.block_until_ready(
            train_step(p, state, place(grads[step]))
        )
        timings.append((name, placement, step, time.perf_counter() - t))
        history.append((updates, p, state))
      results[placement] = history

    for step in range(NUM_STEPS):
      (ref_updates, ref_params, _), (updates, new_params, state) = (
          results['single'][step],
          results['sharded'][step],
      )
      for kind, tree, ref in (
          ('param', new_params, ref_params),
          ('update', updates, ref_updates),
      ):
        flat = jax.tree_util.tree_flatten_with_path(tree)[0]
        for (path, leaf), ref_leaf, sharding in zip(
            flat, jax.tree.leaves(ref), jax.tree.leaves(shardings)
        ):
          records.append(
              record(name, step, kind, path_str(path), sharding, leaf, ref_leaf)
          )
      # Optimizer-state leaves that mirror the params (Adam moments, momentum).
      for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        names = path_str(path)
        matches = [
            s for k, s in leaf_shardings.items() if names.endswith('/' + k)
        ]
        if matches and leaf.ndim:
          records.append(
              record(name, step, 'state', names, matches[0], leaf, None)
          )
  print(
      json.dumps(
          {'device_count': len(devices), 'records': records, 'timings': timings}
      )
  )


def record(optimizer, *fields):
  """One leaf's sharding record (see :func:`mesh_testing.sharding_record`)."""
  return sharding_record({'optimizer': optimizer}, *fields)


if __name__ == '__main__':
  main()
