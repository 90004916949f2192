"""TensorBoard event files beside ``metrics.jsonl``.

The training loop hands every record it appends to ``WORKDIR/metrics.jsonl``
(:mod:`bort_jax.training.metrics_log`) to a :class:`TensorBoardWriter` too,
which writes it as scalars to an event file in the same folder
(``WORKDIR/events.out.tfevents.*``), through ``tensorboardX`` (pure Python,
no TensorFlow). So::

  tensorboard --logdir runs/mnist_cnn

draws one curve per run of ``bort-train --compare adamw,bort_adamw
--workdir runs/mnist_cnn`` (a run per sub-folder). Records come at each
epoch's end and, with ``log_every_steps`` set, every that many steps.

A record becomes the scalars of :func:`record_scalars`: ``train_loss`` is
tagged ``train/loss``, ``eval_accuracy`` ``eval/accuracy``, the learning rate
and step time go under ``train/``, and the orthogonality summary under
``orthogonality/`` (e.g. ``orthogonality/relative_error/mean``), all at the
record's global ``step``.

Example:
  >>> from bort_jax.training.metric_writers import record_scalars
  >>> record_scalars({'step': 100, 'train_loss': 0.25, 'learning_rate': 0.5,
  ...                 'orthogonality': {'relative_error/mean': 0.2}})
  {'train/loss': 0.25, 'train/learning_rate': 0.5, \
'orthogonality/relative_error/mean': 0.2}
"""

from __future__ import annotations

import math
import numbers
import os
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import jax

# Record fields that are not curves: the x axis itself, and a count.
_NOT_SCALARS = frozenset({'step', 'eval_count', 'nonfinite'})
# Record fields tagged under another name than their own.
_TAGS = {
    'learning_rate': 'train/learning_rate',
    'step_time': 'train/step_time',
    'nonfinite_steps': 'train/nonfinite_steps',
}


def _tag(key: str) -> str:
  """``train_loss`` -> ``train/loss``; ``learning_rate`` ->
  ``train/learning_rate``; other keys stay as they are."""
  if key in _TAGS:
    return _TAGS[key]
  for prefix in ('train_', 'eval_'):
    if key.startswith(prefix):
      return prefix[:-1] + '/' + key[len(prefix) :]
  return key


def _is_number(value: Any) -> bool:
  return (
      isinstance(value, numbers.Real)
      and not isinstance(value, bool)
      and math.isfinite(value)
  )


def record_scalars(record: Mapping[str, Any]) -> dict[str, float]:
  """The TensorBoard scalars of one ``metrics.jsonl`` record.

  Finite numbers only: ``None`` (a non-finite value, see
  :func:`bort_jax.training.metrics_log.sanitize`), strings and lists are
  left out, and so are ``step`` (the x axis), ``eval_count`` and
  ``nonfinite``. A nested mapping (the orthogonality summary) gives one tag
  per entry, ``outer/inner``.

  Args:
    record: a record as the training loop writes it.

  Returns:
    ``{tag: value}`` in the record's order.
  """
  scalars = {}
  for key, value in record.items():
    if key in _NOT_SCALARS:
      continue
    if isinstance(value, Mapping):
      for inner, number in value.items():
        if _is_number(number):
          scalars[f'{key}/{inner}'] = float(number)
    elif _is_number(value):
      scalars[_tag(key)] = float(value)
  return scalars


class TensorBoardWriter:
  """Writes training records as TensorBoard scalars (process 0 only).

  Each :meth:`write` is flushed to disk at once (records come every
  ``log_every_steps`` steps or epoch, not every step), so the event file is
  complete whenever the run stops. The file is closed by :meth:`close`, on
  leaving a ``with`` block, or when the writer is garbage collected.

  Args:
    logdir: the folder of the event file (the run's work directory).
    purge_step: when resuming from the checkpoint of step ``S``, pass
      ``S + 1``: TensorBoard then hides the events of steps ``>= S + 1``
      that the stopped run wrote after that checkpoint (the resumed run
      writes those steps again), as ``metrics.jsonl`` drops them.
    enabled: write nothing if false (default: on process 0 only).

  Example:
    >>> import tempfile
    >>> from bort_jax.training.metric_writers import TensorBoardWriter
    >>> with tempfile.TemporaryDirectory() as workdir:
    ...   with TensorBoardWriter(workdir) as writer:
    ...     writer.write({'step': 10, 'train_loss': 0.3})
    {'train/loss': 0.3}
  """

  def __init__(
      self,
      logdir: str | os.PathLike[str],
      *,
      purge_step: int | None = None,
      enabled: bool | None = None,
  ):
    if purge_step is not None and (
        isinstance(purge_step, bool)
        or not isinstance(purge_step, int)
        or purge_step < 0
    ):
      raise ValueError(
          f'purge_step must be a non-negative integer, got {purge_step!r}'
      )
    self.logdir = Path(logdir)
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._writer = None
    self._closed = False
    if self.enabled:
      # Imported here: the library's other modules do not need it.
      import tensorboardX  # pylint: disable=import-outside-toplevel

      self._writer = tensorboardX.SummaryWriter(
          os.fspath(self.logdir), purge_step=purge_step or None
      )
      self._finalizer = weakref.finalize(self, self._writer.close)

  def write(self, record: Mapping[str, Any]) -> dict[str, float]:
    """Writes the scalars of ``record`` at ``record['step']`` and flushes.

    Args:
      record: a ``metrics.jsonl`` record (it must have an integer ``step``).

    Returns:
      The scalars written (:func:`record_scalars`).
    """
    if self._closed:
      raise ValueError(f'the TensorBoard writer of {self.logdir} is closed')
    step = record.get('step')
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
      raise TypeError(
          f"a record needs an integer 'step' to be plotted, got {step!r}"
      )
    scalars = record_scalars(record)
    if self._writer is not None:
      for tag, value in scalars.items():
        self._writer.add_scalar(tag, value, global_step=int(step))
      self._writer.flush()
    return scalars

  def close(self) -> None:
    """Flushes and closes the event file (later writes are errors)."""
    if self._writer is not None:
      self._finalizer()
      self._writer = None
    self._closed = True

  def __enter__(self) -> Self:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


__all__ = ['TensorBoardWriter', 'record_scalars']
