"""TensorBoard event files beside metrics.jsonl, and a quiet log off a terminal.

The event files are read back with the TFRecord framing (8-byte length,
4-byte CRC, payload, 4-byte CRC) and tensorboardX's ``Event`` protocol
buffer, so the check does not depend on TensorBoard being installed.
"""

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from bort_jax.training import metrics_io
from bort_jax.training import workdir as workdir_lib

event_pb2 = pytest.importorskip('tensorboardX.proto.event_pb2')


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
  """``{tag: [(step, value), ...]}`` of every event file in ``folder``."""
  scalars = {}
  files = sorted(folder.glob('events.out.tfevents.*'))
  assert files, f'no event file in {folder}: {sorted(os.listdir(folder))}'
  for path in files:
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack('<Q', data[offset : offset + 8])
      payload = data[offset + 12 : offset + 12 + length]
      assert len(payload) == length, f'{path} is cut short'
      offset += 12 + length + 4
      event = event_pb2.Event.FromString(payload)
      for value in event.summary.value:
        scalars.setdefault(value.tag, []).append(
            (event.step, value.simple_value)
        )
  return scalars


def test_record_scalars_tags_and_skips():
  record = {
      'step': 7,
      'epoch': 1,
      'train_loss': 0.5,
      'train_accuracy': None,
      'eval_accuracy': 0.75,
      'eval_count': 300,
      'learning_rate': 0.25,
      'step_time': 0.125,
      'nonfinite': ['train_accuracy'],
      'flag': True,
      'orthogonality': {'relative_error/mean': 2.0, 'bad': None},
  }
  assert metrics_io.record_scalars(record) == {
      'epoch': 1.0,
      'train/loss': 0.5,
      'eval/accuracy': 0.75,
      'train/learning_rate': 0.25,
      'train/step_time': 0.125,
      'orthogonality/relative_error/mean': 2.0,
  }


def test_writer_round_trip_and_errors(tmp_path):
  with metrics_io.TensorBoardWriter(tmp_path) as writer:
    writer.write({'step': 3, 'train_loss': 0.5})
    writer.write(
        metrics_io.sanitize(
            {'step': 6, 'train_loss': float('nan'), 'eval_accuracy': 0.25}
        )
    )
    with pytest.raises(TypeError, match="integer 'step'"):
      writer.write({'step': 1.5, 'train_loss': 0.5})
  # Flushed at each write; complete after close.
  assert read_scalars(tmp_path) == {
      'train/loss': [(3, 0.5)],
      'eval/accuracy': [(6, 0.25)],
  }
  with pytest.raises(ValueError, match='closed'):
    writer.write({'step': 9, 'train_loss': 0.5})
  with pytest.raises(ValueError, match='purge_step'):
    metrics_io.TensorBoardWriter(tmp_path, purge_step=-1)


def test_disabled_writer_writes_nothing(tmp_path):
  writer = metrics_io.TensorBoardWriter(tmp_path, enabled=False)
  assert writer.write({'step': 1, 'train_loss': 0.5}) == {'train/loss': 0.5}
  writer.close()
  assert not list(tmp_path.iterdir())


def test_bort_train_leaves_curves_and_a_short_log(
    tmp_path, mnist_data_dir, subprocess_env
):
  """A bort-train run without a terminal: event files with per-step and
  per-epoch scalars, no progress bar lines, a log of a few KB."""
  workdir = tmp_path / 'run'
  command = [
      sys.executable,
      '-m',
      'bort_jax.programs.train',
      '--config',
      'mnist_mlp',
      '--workdir',
      str(workdir),
      '--data-dir',
      mnist_data_dir,
      '--epochs',
      '2',
      '--batch-size',
      '64',
      '--optimizer',
      'bort_adamw',
      '--config.train_examples=640',
      '--config.eval_examples=300',
      '--config.eval_batch_size=100',
      '--config.log_every_steps=4',
      '--config.model_kwargs={"hidden_features": [32]}',
  ]
  done = subprocess.run(
      command,
      env=subprocess_env,
      stdin=subprocess.DEVNULL,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      timeout=600,
      check=False,
  )
  log = done.stdout.decode(errors='replace')
  assert done.returncode == 0, log
  # 2 epochs of 10 steps: no progress bar without a terminal, and a log of
  # a few lines (the comparison table), not one line per bar refresh.
  assert len(done.stdout) < 2 * 4096, log
  assert 'step/s' not in log and '\r' not in log, log

  scalars = read_scalars(workdir)
  steps = lambda tag: [step for step, _ in scalars[tag]]
  # log_every_steps=4 within epochs (steps 4, 8, 12, 16) and the epoch ends.
  assert steps('train/loss') == [4, 8, 10, 12, 16, 20]
  assert steps('eval/accuracy') == [10, 20]
  assert steps('orthogonality/relative_error/mean') == [10, 20]
  for tag in ('train/accuracy', 'train/learning_rate', 'eval/loss', 'epoch'):
    assert tag in scalars, sorted(scalars)
  # The same numbers as metrics.jsonl.
  last = metrics_io.read_records(workdir / metrics_io.METRICS_FILE)[-1]
  assert scalars['eval/accuracy'][-1] == (
      20,
      pytest.approx(last['eval_accuracy'], rel=1e-6),
  )


def test_overwrite_removes_the_previous_runs_event_files(tmp_path):
  with metrics_io.TensorBoardWriter(tmp_path) as writer:
    writer.write({'step': 1, 'train_loss': 0.5})
  (tmp_path / 'notes.txt').write_text('not a run file')
  workdir_lib.remove_run(tmp_path)
  assert sorted(p.name for p in tmp_path.iterdir()) == ['notes.txt']
