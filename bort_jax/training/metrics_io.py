"""Where a run's records go: ``metrics.jsonl`` and TensorBoard event files.

The training loop appends each record (per epoch and, with
``log_every_steps``, every that many steps) to ``WORKDIR/metrics.jsonl``
through a :class:`MetricsLog`, and hands it to a :class:`TensorBoardWriter`
too.

``metrics.jsonl``: strict JSON lines, consistent with checkpoints. Every line
is one JSON object (``json.dumps(..., allow_nan=False)``): a value that is
not a finite number is written as ``null`` and its key listed under
``"nonfinite"``, so every line parses with any JSON reader. A run that
resumes from checkpoint step ``S`` first calls :func:`truncate_after`
``(path, S)``: records of steps after ``S`` (written after that checkpoint by
the run that stopped) are dropped, and a partial last line (a full disk, a
killed process) is removed, by writing the kept lines to a temporary file
and ``os.replace``-ing it, so the log is never half rewritten. The resumed
run then writes those steps again, once.

TensorBoard: the same records as scalars in an event file in the same folder
(``WORKDIR/events.out.tfevents.*``), through ``tensorboardX`` (pure Python,
no TensorFlow). So::

  tensorboard --logdir runs/mnist_cnn

draws one curve per run of ``bort-train --compare adamw,bort_adamw
--workdir runs/mnist_cnn`` (a run per sub-folder). A record becomes the
scalars of :func:`record_scalars`: ``train_loss`` is tagged ``train/loss``,
``eval_accuracy`` ``eval/accuracy``, the learning rate and step time go under
``train/``, and the orthogonality summary under ``orthogonality/`` (e.g.
``orthogonality/relative_error/mean``), all at the record's global ``step``.

Example:
  >>> record, = sanitize_records([{'step': 3, 'train_loss': float('nan')}])
  >>> record
  {'step': 3, 'train_loss': None, 'nonfinite': ['train_loss']}
  >>> record_scalars({'step': 100, 'train_loss': 0.25, 'learning_rate': 0.5,
  ...                 'orthogonality': {'relative_error/mean': 0.2}})
  {'train/loss': 0.25, 'train/learning_rate': 0.5, \
'orthogonality/relative_error/mean': 0.2}
"""

from __future__ import annotations

import json
import math
import numbers
import os
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import jax

METRICS_FILE = 'metrics.jsonl'


def _sanitize(value: Any, key: str, bad: list[str]) -> Any:
  if isinstance(value, float) and not math.isfinite(value):
    bad.append(key)
    return None
  if isinstance(value, dict):
    return {k: _sanitize(v, f'{key}/{k}', bad) for k, v in value.items()}
  return value


def sanitize(record: dict[str, Any]) -> dict[str, Any]:
  """``record`` with non-finite floats as ``None``, listed under
  ``'nonfinite'`` (nested keys as ``'outer/inner'``)."""
  bad = []
  clean = {k: _sanitize(v, k, bad) for k, v in record.items()}
  if bad:
    clean['nonfinite'] = sorted(set(clean.get('nonfinite') or []) | set(bad))
  return clean


def sanitize_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """:func:`sanitize` of each record."""
  return [sanitize(r) for r in records]


def encode(record: dict[str, Any]) -> str:
  """One strict JSON line (with its newline) for ``record``."""
  return json.dumps(sanitize(record), allow_nan=False) + '\n'


def read_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
  """The records of a metrics file, oldest first ([] if there is none).

  A last line that does not parse (cut short) is left out.

  Raises:
    ValueError: a line other than the last does not parse; the message
      names the file and the line.
  """
  path = Path(path)
  if not path.is_file():
    return []
  lines = path.read_text().splitlines()
  records = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except ValueError as error:
      if number == len(lines):
        break
      raise ValueError(f'{path}, line {number}: not JSON: {error}') from None
  return records


def truncate_after(path: str | os.PathLike[str], step: int) -> int:
  """Keeps the records of steps ``<= step``, atomically; drops a partial line.

  Args:
    path: the metrics file (nothing happens if it does not exist).
    step: the step of the checkpoint the run resumes from.

  Returns:
    The number of lines removed (records after ``step``, a partial or
    non-JSON line).
  """
  path = Path(path)
  if not path.is_file():
    return 0
  kept, removed = [], 0
  for line in path.read_text().splitlines():
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except ValueError:
      removed += 1
      continue
    if isinstance(record, dict) and record.get('step', 0) <= step:
      kept.append(line + '\n')
    else:
      removed += 1
  if removed or not path.read_bytes().endswith(b'\n'):
    temporary = path.with_name(path.name + '.tmp')
    with temporary.open('w') as f:
      f.writelines(kept)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  return removed


class MetricsLog:
  """Appends strict JSON lines to ``WORKDIR/metrics.jsonl`` (process 0 only).

  Each record is written with one ``write`` and flushed, so a killed run
  leaves at most one partial line, which :func:`truncate_after` removes.
  """

  def __init__(self, workdir: str | os.PathLike[str]):
    self.path = Path(workdir) / METRICS_FILE
    self.enabled = jax.process_index() == 0

  def write(self, record: dict[str, Any]) -> dict[str, Any]:
    """Appends ``record``; returns it as written (sanitized)."""
    clean = sanitize(record)
    if self.enabled:
      with self.path.open('a') as f:
        f.write(json.dumps(clean, allow_nan=False) + '\n')
    return clean


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
  :func:`sanitize`), strings and lists are
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
    >>> with TensorBoardWriter('/tmp/run') as writer:  # doctest: +SKIP
    ...   writer.write({'step': 10, 'train_loss': 0.3})
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


__all__ = [
    'METRICS_FILE',
    'MetricsLog',
    'TensorBoardWriter',
    'encode',
    'read_records',
    'record_scalars',
    'sanitize',
    'sanitize_records',
    'truncate_after',
]
