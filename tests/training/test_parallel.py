"""Data parallelism: sharding rules here, the 8-device equivalence check in a
subprocess (``multidevice_check.py``)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from bort_jax.training import parallel

import multidevice_check  # tests/training is on the path (pytest's rootdir-relative imports)

pytestmark = pytest.mark.expensive

CHECK = Path(__file__).with_name('multidevice_check.py')


@pytest.mark.parametrize(
    'shape, shards, min_size, expected',
    [
        (
            (3, 3, 64, 128),
            8,
            0,
            P(None, None, None, 'data'),
        ),  # largest divisible axis
        ((128, 64), 8, 0, P('data', None)),
        ((64, 64), 8, 0, P(None, 'data')),  # tie: the last axis
        ((12, 10), 8, 0, P()),  # no divisible axis
        ((3, 3, 64, 128), 8, 10**6, P()),  # too small
        ((1024,), 1, 0, P()),  # one device
        ((), 8, 0, P()),
    ],
)
def test_fsdp_spec(shape, shards, min_size, expected):
  assert parallel.fsdp_spec(shape, shards, min_size) == expected


def test_state_sharding_follows_shapes():
  mesh = parallel.create_mesh()
  state = {
      'w': jnp.ones((8, 4)),
      'mu': jnp.ones((8, 4)),
      'step': jnp.zeros([], jnp.int32),
  }
  replicated = parallel.state_sharding(state, mesh)
  assert all(s.spec == P() for s in jax.tree.leaves(replicated))
  fsdp = parallel.state_sharding(state, mesh, fsdp=True, min_size=0)
  assert fsdp['w'].spec == fsdp['mu'].spec  # moments sharded like their params


def test_global_batch_and_pmap_helpers():
  mesh = parallel.create_mesh()
  batch = {
      'image': np.arange(24, dtype=np.float32).reshape(4, 6),
      'label': np.arange(4),
  }
  placed = parallel.global_batch(batch, mesh)
  np.testing.assert_array_equal(placed['image'], batch['image'])
  assert placed['image'].sharding.spec == P('data')
  split = parallel.split_for_pmap(batch, num_devices=2)
  assert split['image'].shape == (2, 2, 6) and split['label'].shape == (2, 2)
  with pytest.raises(ValueError, match='does not split over 3'):
    parallel.split_for_pmap(batch, num_devices=3)
  tree = {'w': jnp.arange(3.0), 'key': jax.random.key(1)}
  replicas = parallel.replicate(tree)
  assert replicas['w'].shape == (jax.local_device_count(), 3)
  back = parallel.unreplicate(replicas)
  np.testing.assert_array_equal(back['w'], tree['w'])
  np.testing.assert_array_equal(
      jax.random.key_data(back['key']), jax.random.key_data(tree['key'])
  )


def test_put_state_places_keys_and_arrays():
  mesh = parallel.create_mesh()
  tree = {'w': np.ones((4, 2), np.float32), 'key': jax.random.key(3)}
  placed = parallel.put_state(
      tree, parallel.state_sharding(jax.tree.map(jnp.asarray, tree), mesh)
  )
  assert placed['w'].sharding.is_fully_replicated
  assert jax.dtypes.issubdtype(placed['key'].dtype, jax.dtypes.prng_key)


def test_data_parallel_steps_match_one_device(subprocess_env):
  """jit (replicated and FSDP) and pmap on 8 CPU devices train like one device."""
  env = dict(
      subprocess_env, XLA_FLAGS='--xla_force_host_platform_device_count=8'
  )
  process = subprocess.run(
      [sys.executable, os.fspath(CHECK)],
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert process.returncode == 0, process.stderr[-4000:]
  results = json.loads(process.stdout.strip().splitlines()[-1])
  expected_modes = {
      'cnn_bort_sgd': {'jit_replicated', 'jit_fsdp', 'pmap'},
      'resnet_batchnorm_bort_lamb': {'jit_fsdp'},
      'vit_dropout_bort_adamw': {'jit_replicated'},
  }
  assert set(results) == set(expected_modes)
  steps, batch = multidevice_check.NUM_STEPS, multidevice_check.BATCH
  eps = float(np.finfo(np.float32).eps)
  for case, modes in expected_modes.items():
    result = results[case]
    if 'adamw' in case:
      # Adam normalises each entry by its own gradient RMS, so an entry whose
      # gradient cancels to rounding level moves by an amount float32 does
      # not bound; allow a thousandth of the steps' size (a sharding bug, e.g.
      # another batch or dropout mask, moves parameters by whole steps).
      tolerance = steps * multidevice_check.LEARNING_RATE * 1e-3
    else:
      # The gradient sums ``batch`` examples in another order (and across
      # devices): a few ulps of the parameters' scale per step.
      tolerance = steps * batch * eps * max(result['scale'], 1.0)
    for mode in modes:
      assert result[mode] <= tolerance, (case, mode, result)
    if 'jit_fsdp' in modes:
      assert result['fsdp_sharded_leaves'] > 0, case
