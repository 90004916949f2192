"""Sharded params keep their sharding through a jitted Bort update.

The 8-device part runs ``sharding_check.py`` in a subprocess with
``--xla_force_host_platform_device_count=8``, so this pytest process keeps its
single CPU device. The script places a few kernels on an 8-device mesh (sharded
along the output axis, along the fan-in, or replicated), runs jitted
``bort_adamw`` / ``bort_sgd`` steps followed by ``optax.apply_updates`` (waiting
for every step), and compares each result with the same run on one device.
"""

import pytest

import mesh_testing

OPTIMIZERS = ['bort_adamw', 'bort_sgd']
NUM_DEVICES = mesh_testing.NUM_DEVICES


@pytest.fixture(scope='module')
def sharded_run():
  return mesh_testing.run_check_script('sharding_check.py', timeout=300)


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
  changed = mesh_testing.sharding_changes(records)
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
