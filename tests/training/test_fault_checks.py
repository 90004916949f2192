"""The checks that keep a training run honest, called directly: batch sizes
against the devices, work directory probes and its lock, strict-JSON
metrics records and their truncation, non-finite parameters named, and
checkpoint folders holding only regular files.

``programs/test_faults.py`` injects the faults into whole ``bort-train`` runs.
"""

import os

import jax.numpy as jnp
import pytest

from testing import strict_records

from bort_jax.training import checkpoint, errors, metrics_io, numerics, preflight
from bort_jax.training import workdir as workdir_lib

# pmap over 8 devices in 2 processes: batches are split per process.
PMAP_TWO_PROCESSES = dict(devices=8, processes=2, local_devices=4, pmap=True)


@pytest.mark.parametrize(
    'sizes,match',
    [
        (
            dict(eval_batch_size=101, devices=2, processes=2),
            'not divisible by the 2 processes',
        ),
        (
            dict(eval_batch_size=100, devices=8, processes=1),
            'eval_batch_size 100 .* the 8 devices',
        ),
        (dict(batch_size=36, **PMAP_TWO_PROCESSES), 'the 4 devices'),
    ],
)
def test_preflight_batch_checks_refuse(sizes, match):
  arguments = dict(batch_size=64, eval_batch_size=64, train_examples=640)
  with pytest.raises(errors.ConfigError, match=match):
    preflight.check_batch_sizes(**{**arguments, **sizes})


def test_preflight_batch_checks_accept_pmap_per_process():
  preflight.check_batch_sizes(
      batch_size=64, eval_batch_size=64, train_examples=64, **PMAP_TWO_PROCESSES
  )


def test_read_only_workdir_message(tmp_path, monkeypatch):
  """The write probe failing as on a read-only file system (EROFS; root
  cannot be denied by permissions here) gives a message, not a traceback."""

  def refuse(*args, **kwargs):
    raise OSError(30, 'Read-only file system')

  monkeypatch.setattr(workdir_lib.tempfile, 'TemporaryFile', refuse)
  with pytest.raises(
      errors.WorkdirError,
      match=f'cannot use {tmp_path} as the work directory: Read-only file system',
  ):
    workdir_lib.check_directory(tmp_path)


def test_metrics_io_is_strict_json(tmp_path):
  log = metrics_io.MetricsLog(tmp_path)
  log.write(
      {
          'step': 1,
          'eval_loss': float('inf'),
          'orthogonality': {'relative_error/mean': float('nan')},
      }
  )
  (record,) = strict_records(tmp_path)
  assert record == {
      'step': 1,
      'eval_loss': None,
      'orthogonality': {'relative_error/mean': None},
      'nonfinite': ['eval_loss', 'orthogonality/relative_error/mean'],
  }


def test_check_finite_params_names_the_leaves():
  params = {
      'dense': {'kernel': jnp.array([1.0, jnp.nan]), 'bias': jnp.zeros(2)},
      'count': jnp.arange(2),
  }
  with pytest.raises(
      errors.NonFiniteError,
      match=r'runs/a has non-finite parameters .* in ' r'dense/kernel: ',
  ):
    numerics.check_finite_params(params, what='runs/a')
  numerics.check_finite_params({'dense': {'kernel': jnp.ones(2)}})


def test_check_output_dir(tmp_path):
  assert workdir_lib.check_output_dir(tmp_path / 'new' / 'out').is_dir()
  (tmp_path / 'file').write_text('')
  with pytest.raises(errors.WorkdirError, match='output folder .* is a file'):
    workdir_lib.check_output_dir(tmp_path / 'file')


def test_check_regular_files_names_a_fifo(tmp_path):
  """A checkpoint holding a FIFO counts as corrupt (reading it would block)."""
  folder = tmp_path / '4' / 'params'
  folder.mkdir(parents=True)
  (folder / 'data').write_bytes(b'x')
  checkpoint.check_regular_files(tmp_path / '4')
  os.mkfifo(folder / 'manifest')
  with pytest.raises(
      ValueError, match=f'{folder / "manifest"} is not a regular file'
  ):
    checkpoint.check_regular_files(tmp_path / '4')


def test_truncate_after_drops_the_records_past_a_step(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4, "tr')
  assert metrics_io.truncate_after(path, 2) == 2
  assert path.read_text() == '{"step": 1}\n{"step": 2}\n'
  assert metrics_io.truncate_after(path, 2) == 0


def test_lock_names_its_owner(tmp_path):
  with (
      workdir_lib.WorkdirLock(tmp_path),
      pytest.raises(
          errors.WorkdirError,
          match=rf'{tmp_path} is in use by pid {os.getpid()} on ',
      ),
  ):
    workdir_lib.WorkdirLock(tmp_path).acquire()
  with workdir_lib.WorkdirLock(tmp_path):  # released: free again
    pass
