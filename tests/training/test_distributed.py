"""Two ``jax.distributed`` processes on localhost train like one process.

Each process (``distributed_worker.py``) has one CPU device and feeds its half
of every batch; the processes synchronise through the coordinator at
``127.0.0.1`` and gloo CPU collectives. Both must end with bit-identical
parameters (compared through per-process checksum files), close to a
single-process run of the same config.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from bort_jax.training import loop

import distributed_worker  # tests/training is on the path (pytest's rootdir-relative imports)

pytestmark = pytest.mark.expensive

WORKER = Path(distributed_worker.__file__)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def single_process_params(tmp_path_factory, mnist_data_dir):
  result = loop.train_and_evaluate(
      distributed_worker.worker_config(),
      tmp_path_factory.mktemp('single'),
      data_dir=mnist_data_dir,
      progress=False,
  )
  return {
      jax.tree_util.keystr(p): np.asarray(x)
      for p, x in jax.tree_util.tree_flatten_with_path(result.state.params)[0]
  }


@pytest.mark.parametrize('param_sharding', ['replicated', 'fsdp'])
def test_two_processes_end_with_identical_params(
    param_sharding,
    tmp_path,
    mnist_data_dir,
    subprocess_env,
    single_process_params,
):
  out = tmp_path / 'out'
  out.mkdir()
  port = free_port()
  workers = [
      subprocess.Popen(
          [
              sys.executable,
              os.fspath(WORKER),
              str(port),
              str(i),
              os.fspath(tmp_path / 'work'),
              mnist_data_dir,
              os.fspath(out),
              param_sharding,
          ],
          env=subprocess_env,
          stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT,
          text=True,
      )
      for i in range(2)
  ]
  try:
    logs = [w.communicate(timeout=300)[0] for w in workers]
  finally:
    for w in workers:
      if w.poll() is None:
        w.kill()
  for worker, log in zip(workers, logs):
    assert worker.returncode == 0, log[-4000:]

  checksums = [
      (out / f'checksum_{i}.txt').read_text().strip() for i in range(2)
  ]
  assert len(checksums[0]) == 64 and checksums[0] == checksums[1]
  copies = [np.load(out / f'params_{i}.npz') for i in range(2)]
  assert sorted(copies[0].files) == sorted(single_process_params)
  for name, expected in single_process_params.items():
    np.testing.assert_array_equal(copies[0][name], copies[1][name])
    # Adam normalises tiny gradient differences (another summation order) up
    # to a fraction of the learning rate (1e-3).
    np.testing.assert_allclose(copies[0][name], expected, rtol=1e-4, atol=2e-5)
  # Process 0 wrote the run's files; the checkpoint holds the final step.
  assert (tmp_path / 'work' / 'metrics.jsonl').read_text().count('\n') == 1
  assert (tmp_path / 'work' / 'checkpoints' / '6').is_dir()
