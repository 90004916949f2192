"""Sharded params keep their sharding through a jitted Bort update.

The 8-device part runs ``sharding_check.py`` in a subprocess with
``--xla_force_host_platform_device_count=8``, so this pytest process keeps its
single CPU device. The script places a few kernels on an 8-device mesh (sharded
along the output axis, along the fan-in, or replicated), runs jitted
``bort_adamw`` / ``bort_sgd`` steps followed by ``optax.apply_updates`` (waiting
for every step), and compares each result with the same run on one device.
"""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), 'sharding_check.py'
)
REPO_ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
OPTIMIZERS = ['bort_adamw', 'bort_sgd']
NUM_DEVICES = 8


@pytest.fixture(scope='module')
def sharded_run():
  env = dict(os.environ)
  env['XLA_FLAGS'] = (
      env.get('XLA_FLAGS', '')
      + f' --xla_force_host_platform_device_count={NUM_DEVICES}'
  ).strip()
  env['JAX_PLATFORMS'] = 'cpu'
  env['PYTHONPATH'] = os.pathsep.join(
      filter(None, [REPO_ROOT, env.get('PYTHONPATH')])
  )
  completed = subprocess.run(
      [sys.executable, SCRIPT],
      env=env,
      cwd=REPO_ROOT,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert completed.returncode == 0, (
      f'sharding_check.py exited with {completed.returncode}\n'
      f'stdout:\n{completed.stdout[-3000:]}\nstderr:\n{completed.stderr[-3000:]}'
  )
  return json.loads(completed.stdout.strip().splitlines()[-1])


def test_subprocess_has_an_eight_device_mesh(sharded_run):
  assert sharded_run['device_count'] == NUM_DEVICES
  leaves = {r['leaf'] for r in sharded_run['records'] if r['kind'] == 'param'}
  assert {
      'out_sharded/kernel',
      'fan_in_sharded/kernel',
      'replicated/kernel',
  } <= leaves
  specs = {r['expected'] for r in sharded_run['records']}
  assert {"P(None, 'x')", "P('x', None)", 'P()'} <= specs


@pytest.mark.parametrize('kind', ['param', 'update', 'state'])
@pytest.mark.parametrize('optimizer', OPTIMIZERS)
def test_sharding_is_preserved(sharded_run, optimizer, kind):
  records = [
      r
      for r in sharded_run['records']
      if r['optimizer'] == optimizer and r['kind'] == kind
  ]
  assert records
  changed = [
      f"step {r['step']} {r['leaf']}: placed as {r['expected']}, came out as {r['got']}"
      for r in records
      if not r['equivalent']
  ]
  assert (
      not changed
  ), f'{optimizer}: {kind} sharding not preserved:\n' + '\n'.join(changed)


@pytest.mark.parametrize('optimizer', OPTIMIZERS)
def test_sharded_values_equal_single_device(sharded_run, optimizer):
  records = [
      r
      for r in sharded_run['records']
      if r['optimizer'] == optimizer and 'max_abs_diff' in r
  ]
  assert {r['kind'] for r in records} == {'param', 'update'}
  for r in records:
    assert r['max_abs_value'] > 0, r
    assert r['max_abs_diff'] <= 1e-5 * r['max_abs_value'] + 1e-7, r
