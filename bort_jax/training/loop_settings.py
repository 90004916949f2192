"""What the training loop reads from a config, read once.

:class:`LoopSettings` holds the numbers the loop runs by (epochs, steps,
intervals, the non-finite policy, the progress bar's label), so the pieces of
the loop (:mod:`~bort_jax.training.trainer`,
:mod:`~bort_jax.training.saver`, :mod:`~bort_jax.training.reporting`) never
look into the config.

Example:
  >>> from bort_jax import configs
  >>> settings = LoopSettings.from_config(
  ...     configs.get_config('mnist_mlp'), steps_per_epoch=100, max_steps=250)
  >>> settings.stop_step
  250
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections
import numpy as np

from bort_jax.training.errors import ConfigError


def check_max_steps(max_steps: Any) -> None:
  """Raises ConfigError unless ``max_steps`` is ``None`` or an integer >= 0."""
  if max_steps is None:
    return
  if (
      isinstance(max_steps, bool)
      or not isinstance(max_steps, (int, np.integer))
      or max_steps < 0
  ):
    raise ConfigError(
        f'max_steps must be a non-negative integer, got {max_steps!r}'
    )


@dataclasses.dataclass(frozen=True)
class LoopSettings:
  """The training loop's settings.

  Attributes:
    epochs: epochs of the whole run.
    steps_per_epoch: train steps per epoch.
    stop_step: the global step this call stops at (the run's last step, or
      ``max_steps`` if smaller).
    log_every_steps: steps between records within epochs (0 or ``None``:
      epoch ends only).
    checkpoint_every_steps: steps between checkpoints within epochs (0 or
      ``None``: epoch ends only).
    skip_nonfinite_steps: non-finite steps are skipped rather than fatal.
    max_consecutive_nonfinite: with ``skip_nonfinite_steps``, how many such
      steps in a row are skipped before one is applied.
    progress: show the progress bar (on process 0).
    label: the progress bar's label.
  """

  epochs: int
  steps_per_epoch: int
  stop_step: int
  log_every_steps: int | None
  checkpoint_every_steps: int | None
  skip_nonfinite_steps: bool
  max_consecutive_nonfinite: int
  progress: bool = True
  label: str | None = None

  @classmethod
  def from_config(
      cls,
      config: ml_collections.ConfigDict,
      *,
      steps_per_epoch: int,
      max_steps: int | None = None,
      progress: bool = True,
      description: str | None = None,
  ) -> LoopSettings:
    """The settings of ``config`` with ``steps_per_epoch`` steps an epoch.

    Args:
      config: the run's config (:mod:`bort_jax.configs`).
      steps_per_epoch: from
        :func:`bort_jax.training.input_pipeline.steps_per_epoch`.
      max_steps: stop once the global step reaches this (``None``: at the
        run's end).
      progress: show a progress bar.
      description: the progress bar's label (default: the optimizer).

    Returns:
      The loop's settings.
    """
    total_steps = config.epochs * steps_per_epoch
    return cls(
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        stop_step=total_steps
        if max_steps is None
        else min(max_steps, total_steps),
        log_every_steps=config.log_every_steps,
        checkpoint_every_steps=config.checkpoint_every_steps,
        skip_nonfinite_steps=config.skip_nonfinite_steps,
        max_consecutive_nonfinite=config.max_consecutive_nonfinite,
        progress=progress,
        label=description or config.optimizer,
    )

  def logs_at(self, step: int) -> bool:
    """Whether ``step`` (within an epoch) gets a record."""
    return bool(self.log_every_steps) and step % self.log_every_steps == 0

  def checkpoints_at(self, step: int) -> bool:
    """Whether ``step`` (within an epoch) gets a checkpoint."""
    return (
        bool(self.checkpoint_every_steps)
        and step % self.checkpoint_every_steps == 0
    )

  def ends_epoch(self, step: int) -> bool:
    """Whether ``step`` is the last of an epoch."""
    return not step % self.steps_per_epoch


__all__ = ['LoopSettings', 'check_max_steps']
