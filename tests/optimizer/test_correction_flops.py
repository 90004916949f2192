"""Per-device FLOPs of the correction on 8 CPU devices, from compiled updates.

Runs ``benchmarks/correction_flops.py --model mixed`` (kernels of sizes 100x
apart, one whose fan-in 8 does not divide) in a subprocess with 8 CPU
devices. The figures come from ``compiled.cost_analysis()``: deterministic
counts, no timing.
"""

import json
import os
import subprocess
import sys

import pytest

import mesh_testing

pytestmark = pytest.mark.expensive

SCRIPT = os.path.join(
    mesh_testing.REPO_ROOT, 'benchmarks', 'correction_flops.py'
)


@pytest.fixture(scope='module')
def placements():
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  completed = subprocess.run(
      [sys.executable, SCRIPT, '--model', 'mixed', '--devices', '8'],
      check=False,
      env=env,
      cwd=mesh_testing.REPO_ROOT,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert completed.returncode == 0, completed.stderr[-3000:]
  return json.loads(completed.stdout.strip().splitlines()[-1])['placements']


@pytest.mark.parametrize(
    'placement, most',
    [
        ('auto fsdp', 1.15),
        ('explicit fsdp', 1.15),
        ('auto replicated, split_axis', 1.3),
        ('explicit replicated, split_axis', 1.3),
    ],
)
def test_each_device_does_its_share_of_the_correction(
    placements, placement, most
):
  # ratio: per-device correction FLOPs / (single-device FLOPs / 8).
  assert 0.95 <= placements[placement]['ratio'] <= most, placements


@pytest.mark.parametrize(
    'placement', ['auto replicated', 'explicit replicated']
)
def test_without_split_replicated_kernels_are_corrected_whole(
    placements, placement
):
  assert placements[placement]['ratio'] == pytest.approx(8.0, rel=0.01)


def test_updates_equal_the_single_device_update(placements):
  for name, row in placements.items():
    # float32; partial Gram matrices are summed in another order.
    assert row['max_abs_diff'] <= 1e-5 * row['max_abs_value'], (name, row)
