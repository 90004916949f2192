"""One epoch of training at a time: steps, records, checkpoints, stops.

:class:`Trainer` holds where the run is (the train state and the global
step) and takes the steps of an epoch from any iterable of batches
(:meth:`Trainer.train_epoch`); within the epoch it writes the records of
``log_every_steps``, the checkpoints of ``checkpoint_every_steps`` and stops
on a signal. An epoch's end (its evaluation, record and checkpoint) is left
to the caller.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jax

from bort_jax.training.compiled_steps import CompiledSteps
from bort_jax.training.loop_settings import LoopSettings
from bort_jax.training.reporting import Reporter
from bort_jax.training.saver import Saver


class Trainer:
  """The train state and step, advanced by epochs.

  Args:
    settings: the loop's settings.
    steps: the compiled steps.
    reporter: writes records, times steps, draws the progress bar.
    saver: checkpoints (finite states only) and stops on a signal.
    state: the train state to start from (as the steps take it).
    step: its global step.
  """

  def __init__(
      self,
      settings: LoopSettings,
      steps: CompiledSteps,
      reporter: Reporter,
      saver: Saver,
      state: Any,
      step: int,
  ):
    self.settings = settings
    self.steps = steps
    self.reporter = reporter
    self.saver = saver
    self.state = state
    self.step = step

  def train_epoch(self, batches: Iterable[Any]) -> None:
    """Trains on ``batches`` (the rest of an epoch) up to its last step.

    Stops early at ``stop_step``; an interrupt checkpoints and raises
    :class:`~bort_jax.training.errors.Interrupted`. The epoch's last step
    gets no record, checkpoint or stop here: they come after its evaluation.
    """
    for batch in batches:
      self._train_step(batch)
      if self.settings.ends_epoch(self.step):
        break
      self._after_step()
      if self.step >= self.settings.stop_step:
        break

  def record(
      self, epoch: float, figures: dict[str, Any], step_time: float | None
  ) -> dict[str, Any]:
    """Writes the record of the current step (its losses checked finite).

    Args:
      epoch: the epochs done (fractional within an epoch).
      figures: more fields of the record (e.g. the evaluation's).
      step_time: seconds per step since the last record, or ``None``.

    Returns:
      The record as written.
    """
    self.saver.check_finite(self.state, self.step, params_too=False)
    return self.reporter.record(self.step, epoch, figures, step_time)

  def _train_step(self, batch: Any) -> None:
    steps = self.steps
    self.state, metrics = steps.train_step(self.state, steps.put_batch(batch))
    self.step += 1
    self.reporter.window.add(metrics, self.step)
    if steps.sync_every_step or not self.reporter.timer.started:
      jax.block_until_ready(self.state)
    self.reporter.step_done()

  def _after_step(self) -> None:
    """The record, checkpoint and stop of a step within an epoch."""
    state, step, timer = self.state, self.step, self.reporter.timer
    if self.settings.logs_at(step):
      step_time = timer.lap(state)
      line = self.record(step / self.settings.steps_per_epoch, {}, step_time)
      self.reporter.show(loss=line.get('train_loss'))
      timer.restart()
    if self.settings.checkpoints_at(step):
      self.saver.save(state, step)
    self.saver.stop_if_signalled(state, step)


__all__ = ['Trainer']
