"""``WORKDIR/metrics.jsonl``: strict JSON lines, consistent with checkpoints.

Every line is one JSON object (``json.dumps(..., allow_nan=False)``): a
value that is not a finite number is written as ``null`` and its key listed
under ``"nonfinite"``, so every line parses with any JSON reader.

A run that resumes from checkpoint step ``S`` first calls
:func:`truncate_after` ``(path, S)``: records of steps after ``S`` (written
after that checkpoint by the run that stopped) are dropped, and a partial
last line (a full disk, a killed process) is removed, by writing the kept
lines to a temporary file and ``os.replace``-ing it, so the log is never
half rewritten. The resumed run then writes those steps again, once.

Example:
  >>> from bort_jax.training.metrics_log import sanitize_records
  >>> record, = sanitize_records([{'step': 3, 'train_loss': float('nan')}])
  >>> record
  {'step': 3, 'train_loss': None, 'nonfinite': ['train_loss']}
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

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


__all__ = [
    'METRICS_FILE',
    'MetricsLog',
    'encode',
    'read_records',
    'sanitize',
    'sanitize_records',
    'truncate_after',
]
