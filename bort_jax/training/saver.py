"""Checkpoints of the training loop, only of finite states; stop on a signal.

:class:`Saver` checks that the running losses and the parameters are finite
before a state is saved or a record written (a non-finite state is never
saved: the newest checkpoint stays the last finite one), saves through
:func:`bort_jax.training.checkpoint.save_state` with the metrics window and
the input iterator's position, and
on SIGINT/SIGTERM saves the current step and raises
:class:`~bort_jax.training.errors.Interrupted`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax

from bort_jax.training import checkpoint, interrupt, numerics
from bort_jax.training.errors import Interrupted, NonFiniteError
from bort_jax.training.loop_settings import LoopSettings
from bort_jax.training.reporting import MetricsWindow


class Saver:
  """Saves the train state at the steps the loop asks for.

  Args:
    manager: the run's orbax checkpoint manager.
    watcher: tells when a signal asks to stop.
    window: the running train metrics (saved with each checkpoint).
    get_state: what the steps take -> one replica of the train state.
    settings: the loop's settings (the non-finite policy).
    saved_step: the step of the newest checkpoint (the step resumed from,
      or 0).
    data_state: returns the input iterator's state (JSON-ready) to save
      with each checkpoint, or ``None`` to save none.
  """

  def __init__(
      self,
      manager: Any,
      watcher: interrupt.InterruptWatcher,
      window: MetricsWindow,
      get_state: Callable[[Any], Any],
      settings: LoopSettings,
      *,
      saved_step: int,
      data_state: Callable[[], Any] | None = None,
  ):
    self.manager = manager
    self.watcher = watcher
    self.window = window
    self.get_state = get_state
    self.settings = settings
    self.saved_step = saved_step
    self.data_state = data_state

  def check_finite(self, state, step: int, *, params_too: bool) -> None:
    """Raises NonFiniteError if the window's losses (or the parameters of
    ``state``) are not finite; the state is then not saved."""
    settings = self.settings
    bad_steps = 0 if settings.skip_nonfinite_steps else self.window.nonfinite()
    if bad_steps:
      raise NonFiniteError(
          f'non-finite training loss (NaN or infinity) in {bad_steps} of the '
          f'steps {self.window.first_step}..{step}; stopped without saving '
          f'that state: the newest checkpoint, step {self.saved_step}, is the '
          'last finite one. Lower learning_rate, or set '
          'skip_nonfinite_steps=True to skip such steps'
      )
    if params_too and not bool(
        jax.device_get(numerics.all_finite(self.get_state(state).params))
    ):
      raise NonFiniteError(
          f'non-finite parameters at step {step}'
          + (
              f' ({settings.max_consecutive_nonfinite} non-finite updates in '
              'a row were skipped, then applied)'
              if settings.skip_nonfinite_steps
              else ''
          )
          + f'; stopped without saving them: the newest checkpoint, step '
          f'{self.saved_step}, is the last finite one. Lower learning_rate'
      )

  def check_epoch_record(
      self,
      record: dict[str, Any],
      *,
      step: int,
      epoch: int,
      path: str | os.PathLike[str],
  ) -> None:
    """Raises NonFiniteError if the record of epoch ``epoch`` (1 for the
    first) has a non-finite loss or accuracy.

    Orthogonality figures are NaN without constrained kernels: only the
    loss and accuracy decide; the run's last record must also have a train
    loss (not every step of it skipped).
    """
    bad = [
        name
        for name in record.get('nonfinite', [])
        if name.startswith(('eval_', 'train_'))
    ]
    if epoch == self.settings.epochs and record.get('train_loss', 0.0) is None:
      bad.append('train_loss (every step of the record skipped)')
    if bad:
      raise NonFiniteError(
          f'non-finite figures at step {step} (epoch {epoch}): '
          f'{", ".join(bad)} in {path}; stopped without saving that '
          f'state: the newest checkpoint is step {self.saved_step}. Lower '
          'learning_rate'
      )

  def save(self, state, step: int) -> None:
    """Checks ``state`` is finite and saves it as checkpoint ``step``."""
    self.check_finite(state, step, params_too=True)
    checkpoint.save_state(
        self.manager,
        self.get_state(state),
        loop_state=self.window.state_dict(),
        data_state=None if self.data_state is None else self.data_state(),
    )
    self.saved_step = step

  def save_if_new(self, state, step: int) -> None:
    """:meth:`save` unless ``step`` is the newest checkpoint already."""
    if self.saved_step != step:
      self.save(state, step)

  def stop_if_signalled(self, state, step: int) -> None:
    """On SIGINT/SIGTERM: checkpoints ``step`` and raises Interrupted."""
    if self.watcher.should_stop(step):
      self.save_if_new(state, step)
      raise Interrupted(step, self.watcher.signal_number)


__all__ = ['Saver']
