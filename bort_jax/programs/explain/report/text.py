"""Small text pieces of the report: numbers with intervals, tables, phrases."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from scipy import stats

__all__ = [
    'block',
    'describe_intervals',
    'describe_runs',
    'format_ci',
    'has_bort_term',
    'table',
]


def format_ci(entry: Any, digits: int = 3, scale: float = 1.0) -> str:
  """``mean ± half-width`` of a :func:`~bort_jax.programs.explain.aggregation.confidence` entry.

  Example:
    >>> format_ci({'mean': 0.91234, 'ci95': 0.0213})
    '0.912 ± 0.021'
  """
  if entry is None:
    return 'n/a'
  if isinstance(entry, Mapping):
    mean, half = entry.get('mean'), entry.get('ci95')
  else:
    mean, half = entry, None
  if mean is None:
    return 'not reached' if isinstance(entry, Mapping) else 'n/a'
  if isinstance(mean, str):
    return mean
  mean = float(mean) * scale
  if not math.isfinite(mean):
    return str(mean)
  text = _number(mean, digits)
  if half is not None:
    text += ' ± ' + _number(float(half) * scale, digits)
  return text


def _number(value: float, digits: int) -> str:
  if value != 0 and (abs(value) < 10 ** -digits or abs(value) >= 1e4):
    return f'{value:.{digits - 1}e}'
  return f'{value:.{digits}f}'


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
  """A markdown table's lines, then an empty line."""
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
  return lines + ['']


def block(lines: list[str]) -> str:
  """``lines`` as one text, without the empty lines that end it."""
  while lines and not lines[-1]:
    lines = lines[:-1]
  return '\n'.join(lines)


def has_bort_term(run: Mapping[str, Any]) -> bool:
  """Whether a run's optimizer adds a Bort term (a Bort one, gamma > 0)."""
  return run['optimizer'].startswith('bort_') and bool(run['gamma'])


def describe_runs(report: Mapping[str, Any]) -> str:
  """Which optimizers the two roles used, from the runs themselves.

  A baseline without Bort (``adamw``, ``sgd``...) ignores its config's
  gamma, so no gamma is given for it.

  Example:
    >>> run = lambda opt, gamma: {'optimizer': opt, 'gamma': gamma}
    >>> describe_runs({'architectures': {'cnn': {'runs': {'0': {
    ...     'baseline': run('adamw', 2.0), 'bort': run('bort_adamw', 30.0)}}}}})
    'Baseline `adamw` (no Bort term) vs Bort `bort_adamw` (gamma 30.0)'
  """
  runs = [
      seed_runs
      for entry in report['architectures'].values()
      for seed_runs in entry['runs'].values()
  ]

  def describe(role: str) -> str:
    optimizers = sorted({run[role]['optimizer'] for run in runs})
    gammas = sorted(
        {run[role]['gamma'] for run in runs if has_bort_term(run[role])}
    )
    names = ', '.join(f'`{name}`' for name in optimizers)
    if not gammas:
      return f'{names} (no Bort term)'
    return f'{names} (gamma {", ".join(str(g) for g in gammas)})'

  return f'Baseline {describe("baseline")} vs Bort {describe("bort")}'


def describe_intervals(seeds: Sequence[int]) -> str:
  """How to read the ``mean ± half-width`` numbers for this many seeds.

  Example:
    >>> describe_intervals([0])
    "One seed: every number is that seed's value, without an interval (an interval needs 2 seeds or more)."
  """
  if len(seeds) < 2:
    return (
        "One seed: every number is that seed's value, without an interval "
        '(an interval needs 2 seeds or more).'
    )
  quantile = stats.t.ppf(0.975, len(seeds) - 1)
  return (
      'Every number is `mean ± 95% half-width` over the seeds (Student t; '
      f'with {len(seeds)} seeds t = {quantile:.2f}, so the intervals are '
      'wide); per-seed values are in `report.json`.'
  )
