"""What the training loop reports: records, step times, the progress bar.

* :class:`MetricsWindow`: the running sums of the train step's loss and
  accuracy since the last record (on device; part of each checkpoint);
* :class:`StepTimer`: the mean wall time per step between records,
  compilation excluded;
* :class:`Reporter`: writes records to ``metrics.jsonl`` and TensorBoard
  (:mod:`~bort_jax.training.metrics_io`) and draws the progress bar.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from bort_jax.training import metrics_io
from bort_jax.training.loop_settings import LoopSettings


@jax.jit
def _accumulate(
    sums: dict[str, jax.Array], metrics: dict[str, jax.Array]
) -> dict[str, jax.Array]:
  """Adds a step's loss and accuracy to the sums; a non-finite loss is
  counted instead of added."""
  finite = jnp.isfinite(metrics['loss'])
  return {
      'loss': sums['loss'] + jnp.where(finite, metrics['loss'], 0.0),
      'accuracy': sums['accuracy']
      + jnp.where(finite, metrics['accuracy'], 0.0),
      'nonfinite': sums['nonfinite'] + (~finite).astype(jnp.int32),
  }


class MetricsWindow:
  """Running sums of the train step's metrics since the last record.

  The sums stay on device (one small compiled add per step, no sync); they
  come to the host at records, checkpoints and finiteness checks. They are
  part of each checkpoint (its ``loop`` item, exact float32 values), so the
  record after a resume averages the same steps as in a run never stopped.
  """

  #: What :meth:`state_dict` returns for an empty window (the restore
  #: template: float32 sums as the train step's metrics, int32 counts).
  EMPTY = {
      'loss': np.zeros((), np.float32),
      'accuracy': np.zeros((), np.float32),
      'nonfinite': np.zeros((), np.int32),
      'steps': np.zeros((), np.int32),
      'first_step': np.full((), -1, np.int32),
  }

  def __init__(self):
    self.sums, self.steps, self.first_step = None, 0, None
    self._host = None

  def add(self, metrics: dict[str, jax.Array], step: int) -> None:
    """Adds the metrics of ``step`` (the global step just taken)."""
    if self.sums is None:
      self.sums = {
          'loss': jnp.zeros_like(metrics['loss']),
          'accuracy': jnp.zeros_like(metrics['accuracy']),
          'nonfinite': jnp.zeros(jnp.shape(metrics['loss']), jnp.int32),
      }
      self.first_step = step
    self.sums = _accumulate(self.sums, metrics)
    self.steps += 1
    self._host = None

  def host(self) -> dict[str, np.ndarray]:
    """The sums on the host (waits for the device)."""
    if self._host is None:
      self._host = (
          {}
          if self.sums is None
          else {k: np.asarray(v) for k, v in jax.device_get(self.sums).items()}
      )
    return self._host

  def nonfinite(self) -> int:
    """Steps since the last record whose loss was NaN or infinite."""
    sums = self.host()
    return int(sums['nonfinite'].reshape(-1)[0]) if sums else 0

  def state_dict(self) -> dict[str, np.ndarray]:
    """The window as scalar arrays (a checkpoint's ``loop`` item); the
    layout of :attr:`EMPTY`."""
    saved = dict(self.EMPTY)
    for name, value in self.host().items():  # pmap: equal per-device copies
      saved[name] = np.asarray(value).reshape(-1)[0].astype(saved[name].dtype)
    saved['steps'] = np.asarray(self.steps, np.int32)
    if self.first_step is not None:
      saved['first_step'] = np.asarray(self.first_step, np.int32)
    return saved

  def load(self, saved: dict[str, Any] | None) -> None:
    """The inverse of :meth:`state_dict`."""
    self.sums, self.steps, self.first_step, self._host = None, 0, None, None
    if saved is None or not int(np.asarray(saved['steps'])):
      return
    self.sums = {
        name: np.asarray(saved[name])
        for name in ('loss', 'accuracy', 'nonfinite')
    }
    self.steps = int(np.asarray(saved['steps']))
    self.first_step = int(np.asarray(saved['first_step']))

  def means(self) -> dict[str, Any]:
    """``{'train_loss': ..., 'train_accuracy': ...}`` since the last call
    (finite steps only; ``nonfinite_steps`` if some were not); resets."""
    if not self.steps:
      return {}
    sums = {k: float(v.reshape(-1)[0]) for k, v in self.host().items()}
    finite = self.steps - int(sums['nonfinite'])
    means = {
        'train_loss': sums['loss'] / finite if finite else None,
        'train_accuracy': sums['accuracy'] / finite if finite else None,
    }
    if sums['nonfinite']:
      means['nonfinite_steps'] = int(sums['nonfinite'])
    self.sums, self.steps, self.first_step, self._host = None, 0, None, None
    return means


class StepTimer:
  """Mean wall time per train step between laps, compilation excluded.

  The first step of a run (which compiles) only starts the clock; later
  laps wait for the device before reading it.
  """

  def __init__(self):
    self.started = False
    self.start = 0.0
    self.steps = 0

  def count_step(self) -> None:
    """Counts a step taken (the first one starts the clock)."""
    if self.started:
      self.steps += 1
    else:
      self.restart()
      self.started = True

  def restart(self) -> None:
    """Starts a new lap."""
    self.start, self.steps = time.perf_counter(), 0

  def lap(self, state) -> float | None:
    """Seconds per step since the last (re)start, ``None`` if no step was timed."""
    if not self.steps:
      return None
    jax.block_until_ready(state)
    return (time.perf_counter() - self.start) / self.steps


def format_loss(value: float | None) -> str:
  """A figure for the progress bar (``'nan'`` for a non-finite one)."""
  return 'nan' if value is None else f'{value:.4f}'


class Reporter:
  """Writes the loop's records and draws its progress bar.

  A record is written to ``metrics.jsonl`` and TensorBoard (event files
  beside it); a resumed run hides the stopped run's events after its
  checkpoint, as ``metrics.jsonl`` drops them. Use as a context manager:
  the progress bar and the event files are closed on leaving, also when
  stopped by a fault or a signal.

  Args:
    workdir: the run's work directory.
    window: the running train metrics; each record takes their means.
    schedule: the learning-rate schedule (a record shows the rate of its
      last step).
    settings: the loop's settings (the bar's length, label and visibility).
    step: the global step the run starts from.
  """

  def __init__(
      self,
      workdir: str | os.PathLike[str],
      window: MetricsWindow,
      schedule: Callable[[int], Any],
      settings: LoopSettings,
      *,
      step: int,
  ):
    self.window = window
    self.schedule = schedule
    self.writer = metrics_io.MetricsLog(workdir)
    self.tensorboard = metrics_io.TensorBoardWriter(
        workdir, purge_step=step + 1 if step else None
    )
    #: The records written (as written: non-finite values as ``None``).
    self.records: list[dict[str, Any]] = []
    # disable=None: no bar when stderr is not a terminal (a log file).
    self.bar = tqdm.tqdm(
        total=settings.stop_step,
        initial=step,
        unit='step',
        dynamic_ncols=True,
        desc=settings.label,
        disable=None
        if settings.progress and jax.process_index() == 0
        else True,
    )
    self.start_time = time.perf_counter()
    self.timer = StepTimer()

  @property
  def path(self):
    """The path of ``metrics.jsonl``."""
    return self.writer.path

  def record(
      self,
      step: int,
      epoch: float,
      extra: dict[str, Any],
      step_time: float | None,
  ) -> dict[str, Any]:
    """Writes the record of ``step``: the window's means and ``extra``.

    Returns:
      The record as written.
    """
    line = {
        'step': step,
        'epoch': epoch,
        **self.window.means(),
        **extra,
        'learning_rate': float(self.schedule(max(step - 1, 0))),
    }
    if step_time is not None:
      line['step_time'] = step_time
    line['elapsed'] = time.perf_counter() - self.start_time
    # The one place records leave the loop: other writers go here too.
    line = self.writer.write(line)
    self.tensorboard.write(line)
    self.records.append(line)
    return line

  def step_done(self) -> None:
    """Counts a train step on the timer and the progress bar."""
    self.timer.count_step()
    self.bar.update()

  def show(self, **figures: float | None) -> None:
    """Shows ``figures`` (e.g. ``loss=0.21``) beside the progress bar."""
    self.bar.set_postfix(**{k: format_loss(v) for k, v in figures.items()})

  def close(self) -> None:
    """Closes the progress bar and the event files."""
    self.bar.close()
    self.tensorboard.close()

  def __enter__(self) -> Reporter:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


__all__ = ['MetricsWindow', 'Reporter', 'StepTimer', 'format_loss']
