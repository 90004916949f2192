"""What ``bort-train`` does with its parsed arguments: check them, train one
run or one per ``--compare`` optimizer, and print the final figures of the
runs side by side.

Example:
  >>> row = comparison_row('adamw', {'eval_accuracy': 0.99}, 12.0)
  >>> row['optimizer'], row['seconds']
  ('adamw', 12.0)
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections

from bort_jax import configs, data
from bort_jax.programs import common
from bort_jax.training import errors, interrupt, loop

#: The table's columns: (title, row key, format).
COMPARISON_COLUMNS = (
    ('optimizer', 'optimizer', '{}'),
    ('test acc', 'eval_accuracy', '{:.4f}'),
    ('test loss', 'eval_loss', '{:.4f}'),
    ('orth. rel. error', 'orthogonality/relative_error/mean', '{:.4f}'),
    ('mean |cos|', 'orthogonality/mean_abs_cosine/mean', '{:.4f}'),
    ('norm spread', 'orthogonality/norm_spread/mean', '{:.4f}'),
    ('time (s)', 'seconds', '{:.0f}'),
)


def check_arguments(
    workdir: str | os.PathLike[str],
    max_steps: int | None,
    resume: bool,
    overwrite: bool,
) -> None:
  """The checks of ``bort-train``'s arguments that need no config.

  Raises:
    errors.ConfigError: a negative ``--max-steps``, ``--resume`` with
      ``--overwrite``, or a ``--workdir`` that is a file.
  """
  if max_steps is not None and max_steps < 0:
    raise errors.ConfigError(f'--max-steps must be >= 0, got {max_steps}')
  if resume and overwrite:  # as the library does, but naming the flags
    raise errors.ConfigError(
        '--resume and --overwrite exclude each other: --resume continues the run '
        'in the work directory, --overwrite discards it'
    )
  workdir = Path(workdir)
  try:
    is_file = workdir.exists() and not workdir.is_dir()
  except OSError as error:  # a name too long, a loop of links...
    raise errors.ConfigError(
        f'--workdir {workdir}: {error.strerror or error}'
    ) from None
  if is_file:
    raise errors.ConfigError(f'--workdir {workdir} is a file, not a directory')


def prepare_data(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike[str],
    data_dir: str | None,
    idx_dir: str | None,
    download: bool,
) -> None:
  """Prepares MNIST from its IDX files if ``data_dir`` lacks it (tfds
  downloads only if it is still missing) and says where the data comes from
  and where the runs write (process 0)."""
  if config.dataset == 'mnist':
    common.ensure_mnist_prepared(data_dir, idx_dir)
  if jax.process_index() == 0:
    print(
        f'bort-train: {config.dataset} from {data.resolve_data_dir(data_dir)}'
        f'{" (downloaded if missing)" if download else ""}; writing to '
        f'{workdir} (metrics.jsonl, TensorBoard events, checkpoints)',
        file=sys.stderr,
        flush=True,
    )


def parse_compare(text: str) -> list[str]:
  """``'adamw,bort_adamw'`` -> the names (:func:`run_configs` checks them).

  Raises:
    ValueError: no name.
  """
  names = [name.strip() for name in text.split(',') if name.strip()]
  if not names:
    raise ValueError('--compare needs optimizer names, e.g. adamw,bort_adamw')
  return names


def run_configs(
    config: ml_collections.ConfigDict, compare: str | None
) -> list[tuple[str, ml_collections.ConfigDict]]:
  """``(optimizer, config)`` of each run.

  Args:
    config: the validated config; with ``compare``, its optimizer is the
      first one compared.
    compare: ``--compare``'s names (``None``: one run, of ``config``).

  Returns:
    ``config`` first, then a validated copy for each other compared name.

  Raises:
    ValueError: no name, or an unknown one (the message lists the valid ones).
  """
  names = parse_compare(compare) if compare else [config.optimizer]
  return [(names[0], config)] + [
      (name, configs.replace(config, optimizer=name)) for name in names[1:]
  ]


def train_runs(
    runs: Sequence[tuple[str, ml_collections.ConfigDict]],
    workdir: os.PathLike[str] | str,
    startup: interrupt.InterruptWatcher,
    *,
    compare: bool,
    **options: Any,
) -> list[dict[str, Any]]:
  """Trains each run (:func:`bort_jax.training.loop.train_and_evaluate`).

  Args:
    runs: ``(optimizer, config)`` pairs (:func:`run_configs`).
    workdir: the work directory; with ``compare``, each run's is
      ``workdir/<optimizer>``.
    startup: the program's watcher of signals before the first run.
    compare: whether the runs are compared (each in a folder of its own).
    **options: the rest of ``train_and_evaluate``'s arguments.

  Returns:
    One :func:`comparison_row` per run.

  Raises:
    errors.Interrupted: a signal came before a run started.
  """
  rows = []
  for name, config in runs:
    if startup.signal_number is not None:
      raise errors.Interrupted(None, startup.signal_number)
    run_dir = Path(workdir) / name if compare else Path(workdir)
    start = time.perf_counter()
    loop.train_and_evaluate(config, run_dir, description=name, **options)
    seconds = time.perf_counter() - start
    rows.append(comparison_row(name, loop.last_evaluation(run_dir), seconds))
  return rows


def comparison_row(
    optimizer: str, record: dict[str, Any], seconds: float
) -> dict[str, Any]:
  """Flattens a final metrics record into :data:`COMPARISON_COLUMNS` keys."""
  row = {'optimizer': optimizer, 'seconds': seconds, **record}
  for figure, value in record.get('orthogonality', {}).items():
    row[f'orthogonality/{figure}'] = value
  return row


def format_comparison(rows: list[dict[str, Any]]) -> str:
  """A plain-text table of :data:`COMPARISON_COLUMNS`, one row per run.

  Example:
    >>> print(format_comparison([{'optimizer': 'adamw', 'eval_accuracy': 0.99}]))
    ... # doctest: +NORMALIZE_WHITESPACE
    optimizer  test acc  test loss  orth. rel. error  mean |cos|  norm spread  time (s)
    adamw      0.9900    -          -                 -           -            -
  """
  table = [[title for title, _, _ in COMPARISON_COLUMNS]]
  for row in rows:
    table.append(
        [
            fmt.format(row[key]) if row.get(key) is not None else '-'
            for _, key, fmt in COMPARISON_COLUMNS
        ]
    )
  widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
  return '\n'.join(
      '  '.join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
      for line in table
  )


def summary(
    config: ml_collections.ConfigDict,
    workdir: os.PathLike[str] | str,
    rows: list[dict[str, Any]],
) -> str:
  """The settings the runs share, then :func:`format_comparison` of ``rows``."""
  epochs = f'{config.epochs} epoch{"s" if config.epochs != 1 else ""}'
  return (
      f'\n{config.name}: {epochs}, batch {config.batch_size}, '
      f'gamma {config.gamma} (bort_* only), work directory {workdir}\n'
      + format_comparison(rows)
  )
