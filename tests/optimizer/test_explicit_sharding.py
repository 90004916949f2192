"""Bort under explicit-axes and auto-axes meshes of 8 CPU devices.

Runs ``explicit_sharding_check.py`` in a subprocess with
``--xla_force_host_platform_device_count=8`` (this pytest process keeps its
single CPU device). Dense and Conv kernels sharded on fan-in, on the output
axis or on both go through jitted ``bort_sgd``, ``bort_adamw`` and
``add_bort_correction`` + Lion steps under ``jax.set_mesh`` of an
explicit-axes mesh (kernels batched, the default, and one by one) and on an
auto-axes mesh (default options). Every result must keep its kernel's
sharding and equal the single-device, one-by-one values.
"""

import pytest

import mesh_testing

pytestmark = pytest.mark.expensive

OPTIMIZERS = ['bort_sgd', 'bort_adamw', 'lion_chain']
VARIANTS = ['explicit_batched', 'explicit_one_by_one', 'auto_default']
NUM_DEVICES = mesh_testing.NUM_DEVICES
KERNELS = {
    'dense_out',
    'dense_out_twin',
    'dense_fan_in',
    'dense_both',
    'dense_replicated',
    'wide_out',
    'conv_out',
    'conv_fan_in',
    'conv_both',
}


@pytest.fixture(scope='module')
def mesh_run():
  return mesh_testing.run_check_script(
      'explicit_sharding_check.py', timeout=900
  )


def _records(run, optimizer, variant, kind=None):
  return [
      r
      for r in run['records']
      if r['optimizer'] == optimizer
      and r['variant'] == variant
      and (kind is None or r['kind'] == kind)
  ]


def test_every_kernel_layout_is_exercised(mesh_run):
  assert mesh_run['device_count'] == NUM_DEVICES
  for optimizer in OPTIMIZERS:
    for variant in VARIANTS:
      leaves = {
          r['leaf'] for r in _records(mesh_run, optimizer, variant, 'param')
      }
      assert {f'{k}/kernel' for k in KERNELS} <= leaves, (
          optimizer,
          variant,
          leaves,
      )
  specs = {r['expected'] for r in mesh_run['records']}
  assert {
      "P(None, 'model')",
      "P('data', None)",
      "P('data', 'model')",
      "P(None, None, None, 'model')",
      "P(None, None, 'model', None)",
      "P(None, None, 'data', 'model')",
  } <= specs


@pytest.mark.parametrize('variant', VARIANTS)
@pytest.mark.parametrize('optimizer', OPTIMIZERS)
def test_sharding_is_preserved(mesh_run, optimizer, variant):
  records = _records(mesh_run, optimizer, variant)
  assert {r['kind'] for r in records} >= {'param', 'update'}
  changed = mesh_testing.sharding_changes(records)
  assert (
      not changed
  ), f'{optimizer} {variant}: sharding not preserved:\n' + '\n'.join(changed)


@pytest.mark.parametrize('variant', VARIANTS)
@pytest.mark.parametrize('optimizer', OPTIMIZERS)
def test_values_equal_single_device_one_by_one(mesh_run, optimizer, variant):
  records = [
      r for r in _records(mesh_run, optimizer, variant) if 'max_abs_diff' in r
  ]
  assert {r['kind'] for r in records} == {'param', 'update'}
  for r in records:
    assert r['max_abs_value'] > 0, r
    # float32 on both sides; sums are reduced in a different order on 8 devices.
    assert r['max_abs_diff'] <= 1e-5 * r['max_abs_value'] + 1e-7, r


@pytest.mark.parametrize('optimizer', OPTIMIZERS)
def test_explicit_mesh_batches_kernels_of_equal_shape_and_sharding(
    mesh_run, optimizer
):
  # dense_out and dense_out_twin share shape and spec: stacked by one
  # concatenate into two matrices; the other (16, 8) kernels, sharded
  # otherwise, are not stacked with them.
  assert mesh_run['concatenates'][f'{optimizer}/explicit_batched'] == [
      'f32[2,16,8]'
  ]
  assert mesh_run['concatenates'][f'{optimizer}/explicit_one_by_one'] == []


def test_orthogonality_report_of_sharded_params(mesh_run):
  # Figures of order 0.1-1 in float32, the Gram matrices at highest precision.
  assert mesh_run['report_max_abs_diff'] <= 1e-5


def test_bort_correction_of_sharded_kernels(mesh_run):
  records = mesh_run['bort_correction']
  assert {r['leaf'] for r in records} == {f'{k}/kernel' for k in KERNELS}
  for r in records:
    assert r['equivalent'], r
    assert r['max_abs_diff'] <= 1e-5 * r['max_abs_value'] + 1e-7, r


def test_split_axis_must_be_an_axis_of_the_mesh(mesh_run):
  assert "split_axis 'batch'" in mesh_run['split_error']
  assert "not among the mesh axes ('data', 'model')" in mesh_run['split_error']
