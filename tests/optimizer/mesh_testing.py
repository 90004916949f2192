"""Shared pieces of the optimizer's multi-device checks.

The check scripts (``sharding_check.py``, ``explicit_sharding_check.py``) run
in a subprocess that sees 8 CPU devices; they import the tree helpers from
here (their folder is first on ``sys.path``), and the tests start them with
:func:`run_check_script`.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

NUM_DEVICES = 8
REPO_ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)


def is_spec(x):
  """Whether ``x`` is a layout leaf ``(shape, PartitionSpec)``."""
  return isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], P)


def path_str(path):
  """``'a/b/kernel'`` for a pytree key path."""
  return jax.tree_util.keystr(path, simple=True, separator='/')


def make_tree(layout, seed, scale):
  """Float32 normal arrays of ``scale`` in the shapes of ``layout``."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda leaf: (scale * rng.standard_normal(leaf[0])).astype(np.float32),
      layout,
      is_leaf=is_spec,
  )


def mesh_devices():
  """The ``NUM_DEVICES`` devices of a check script; exits if there are not."""
  devices = jax.devices()
  if len(devices) != NUM_DEVICES:
    raise SystemExit(
        f'expected {NUM_DEVICES} devices, got {len(devices)}: set XLA_FLAGS='
        f'--xla_force_host_platform_device_count={NUM_DEVICES}'
    )
  return devices


def sharding_record(labels, step, kind, leaf_name, expected, leaf, ref_leaf):
  """A JSON-ready record of one leaf after ``step``: ``labels`` (e.g. the
  optimizer), whether its sharding is equivalent to ``expected``, and, with a
  single-device ``ref_leaf``, the largest difference from it."""
  equivalent = bool(leaf.sharding.is_equivalent_to(expected, leaf.ndim))
  entry = {
      **labels,
      'step': step,
      'kind': kind,
      'leaf': leaf_name,
      'expected': str(expected.spec),
      'got': str(getattr(leaf.sharding, 'spec', leaf.sharding)),
      'equivalent': equivalent,
  }
  if ref_leaf is not None:
    value = np.asarray(leaf, np.float64)
    ref_value = np.asarray(ref_leaf, np.float64)
    entry['max_abs_diff'] = float(np.max(np.abs(value - ref_value)))
    entry['max_abs_value'] = float(np.max(np.abs(ref_value)))
  return entry


def sharding_changes(records):
  """One line per record whose sharding came out other than it was placed."""
  return [
      f"step {r['step']} {r['kind']} {r['leaf']}: placed as {r['expected']}, "
      f"came out as {r['got']}"
      for r in records
      if not r['equivalent']
  ]


def run_check_script(name, timeout):
  """Runs ``name`` (in this folder) on 8 CPU devices; returns its JSON line."""
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
  env = dict(os.environ)
  env['XLA_FLAGS'] = (
      env.get('XLA_FLAGS', '')
      + f' --xla_force_host_platform_device_count={NUM_DEVICES}'
  ).strip()
  env['JAX_PLATFORMS'] = 'cpu'
  completed = subprocess.run(
      [sys.executable, script],
      check=False,
      env=env,
      cwd=REPO_ROOT,
      capture_output=True,
      text=True,
      timeout=timeout,
  )
  assert completed.returncode == 0, (
      f'{name} exited with {completed.returncode}\n'
      f'stdout:\n{completed.stdout[-3000:]}\nstderr:\n{completed.stderr[-3000:]}'
  )
  return json.loads(completed.stdout.strip().splitlines()[-1])
