"""The training loop's pieces on their own: settings, metrics window, epochs.

No data set and no model: the trainer runs a counting step over plain
Python batches, so these checks take a second.
"""

import math

import jax.numpy as jnp
import pytest

from bort_jax import configs
from bort_jax.training import interrupt, loop_settings, metrics_io, reporting
from bort_jax.training.compiled_steps import CompiledSteps
from bort_jax.training.errors import ConfigError
from bort_jax.training.saver import Saver
from bort_jax.training.trainer import Trainer


def settings(**changes) -> loop_settings.LoopSettings:
  values = dict(
      epochs=2,
      steps_per_epoch=4,
      stop_step=8,
      log_every_steps=0,
      checkpoint_every_steps=0,
      skip_nonfinite_steps=False,
      max_consecutive_nonfinite=3,
      progress=False,
  )
  values.update(changes)
  return loop_settings.LoopSettings(**values)


def test_settings_from_config():
  config = configs.replace(
      configs.get_config('mnist_mlp'), epochs=3, log_every_steps=5
  )
  read = loop_settings.LoopSettings.from_config(config, steps_per_epoch=10)
  assert (read.epochs, read.steps_per_epoch, read.stop_step) == (3, 10, 30)
  assert read.label == config.optimizer
  assert read.logs_at(15) and not read.logs_at(16)
  assert not read.checkpoints_at(10)  # 0: epoch ends only
  assert read.ends_epoch(20) and not read.ends_epoch(21)
  stopped = loop_settings.LoopSettings.from_config(
      config, steps_per_epoch=10, max_steps=7, description='run'
  )
  assert (stopped.stop_step, stopped.label) == (7, 'run')


@pytest.mark.parametrize('max_steps', [-1, 1.5, True, '3'])
def test_max_steps_must_be_a_non_negative_integer(max_steps):
  with pytest.raises(ConfigError, match='max_steps must be'):
    loop_settings.check_max_steps(max_steps)


def test_metrics_window_means_skip_nonfinite_and_round_trip():
  window = reporting.MetricsWindow()
  for step, loss in enumerate([1.0, math.nan, 3.0], start=5):
    window.add({'loss': jnp.float32(loss), 'accuracy': jnp.float32(0.5)}, step)
  assert window.nonfinite() == 1
  restored = reporting.MetricsWindow()
  restored.load(window.state_dict())
  assert (restored.steps, restored.first_step) == (3, 5)
  expected = {'train_loss': 2.0, 'train_accuracy': 0.5, 'nonfinite_steps': 1}
  assert window.means() == expected
  assert restored.means() == expected
  assert window.means() == {}
  assert window.state_dict()['first_step'] == -1


def counting_steps() -> CompiledSteps:
  """A train step that adds the batch to the state; loss = the batch."""

  def train_step(state, batch):
    return state + batch, {
        'loss': jnp.float32(batch),
        'accuracy': jnp.float32(1.0),
    }

  return CompiledSteps(
      train_step=train_step,
      eval_step=None,
      report=None,
      put_batch=lambda batch: batch,
      state_shardings=None,
      replicate_state=lambda state: state,
      get_state=lambda state: state,
      sync_every_step=False,
  )


def trainer_in(tmp_path, run_settings, step=0) -> Trainer:
  window = reporting.MetricsWindow()
  reporter = reporting.Reporter(
      tmp_path, window, lambda step: 0.1, run_settings, step=step
  )
  saver = Saver(
      None,
      interrupt.InterruptWatcher(enabled=False),
      window,
      lambda state: state,
      run_settings,
      saved_step=step,
  )
  state = jnp.zeros((), jnp.float32)
  return Trainer(run_settings, counting_steps(), reporter, saver, state, step)


def test_train_epoch_ends_at_the_epoch_end_then_at_stop_step(tmp_path):
  trainer = trainer_in(tmp_path, settings(log_every_steps=2, stop_step=6))
  with trainer.reporter:
    trainer.train_epoch(iter(range(1, 100)))  # more batches than the epoch
    assert trainer.step == 4  # the epoch's end: no record of it here
    assert [r['step'] for r in trainer.reporter.records] == [2]
    trainer.train_epoch([5, 6, 7, 8])
  assert trainer.step == 6
  assert float(trainer.state) == 1 + 2 + 3 + 4 + 5 + 6
  records = metrics_io.read_records(tmp_path / metrics_io.METRICS_FILE)
  assert [(r['step'], r['epoch']) for r in records] == [(2, 0.5), (6, 1.5)]
  # The epoch's end wrote nothing: step 6's record averages steps 3 to 6.
  assert records[1]['train_loss'] == pytest.approx((3 + 4 + 5 + 6) / 4)


def test_train_epoch_resumes_within_an_epoch(tmp_path):
  trainer = trainer_in(tmp_path, settings(), step=5)
  with trainer.reporter:
    trainer.train_epoch([6, 7, 8, 9])
  assert trainer.step == 8  # step 8 ends the second epoch
  assert float(trainer.state) == 6 + 7 + 8
