"""Aggregation over seeds: means with 95% Student-t intervals, paired
comparisons, and the NaN check of a report.

Example:
  >>> confidence([0.8, 0.9, 1.0])['n']
  3
  >>> paired_ratio([1.0, 3.0], [2.0, 4.0])['values']
  [0.5, 0.75]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bort_jax import explain

__all__ = [
    'aggregate',
    'check_finite',
    'confidence',
    'find_nan',
    'paired_difference',
    'paired_ratio',
]


def confidence(values: Sequence[float | None]) -> dict[str, Any]:
  """Mean and 95% Student-t half-width over seeds, with the values.

  ``ci95`` is ``None`` for a single value (one seed gives no interval);
  ``mean`` is ``None`` when a value is missing (e.g. a success level not
  reached), so no average hides it.

  Example:
    >>> round(confidence([1.0, 2.0, 3.0])['ci95'], 4)
    2.4841
  """
  values = list(values)
  if any(v is None for v in values):
    return {'mean': None, 'ci95': None, 'n': len(values), 'values': values}
  mean, half = explain.mean_confidence_interval(np.asarray(values, float))
  return {
      'mean': float(mean),
      'ci95': None if len(values) < 2 else round(float(half), 6),
      'n': len(values),
      'values': [float(v) for v in values],
  }


def aggregate(per_seed: Sequence[Any]) -> Any:
  """Replaces every number of equally structured results by :func:`confidence`.

  Args:
    per_seed: one result tree (nested dicts of numbers, strings, lists) per
      seed, all with the same keys.

  Returns:
    The tree of the first seed with each number (or ``None``) replaced by
    ``{'mean', 'ci95', 'n', 'values'}``; strings and lists are kept from
    the first seed, and a value that is ``None`` in every seed stays
    ``None``.

  Example:
    >>> trees = [{'r': 0.5, 'layer': 'a'}, {'r': 0.7, 'layer': 'a'}]
    >>> aggregate(trees)['r']['mean']
    0.6
  """
  first = per_seed[0]
  if isinstance(first, Mapping):
    return {k: aggregate([tree[k] for tree in per_seed]) for k in first}
  if all(v is None for v in per_seed):
    return None
  if first is None or (
      isinstance(first, (int, float, np.number)) and not isinstance(first, bool)
  ):
    if all(
        v is None or isinstance(v, (int, float, np.number)) for v in per_seed
    ):
      return confidence(per_seed)
  return first


def paired_difference(
    bort: Sequence[float], baseline: Sequence[float]
) -> dict[str, Any]:
  """Bort minus baseline per seed (same seed = same initialisation and data
  order), with its mean and 95% interval."""
  return confidence([b - a for b, a in zip(bort, baseline, strict=True)])


def paired_ratio(
    bort: Sequence[float], baseline: Sequence[float]
) -> dict[str, Any]:
  """Bort / baseline per seed, with its mean and 95% interval."""
  return confidence([b / a for b, a in zip(bort, baseline, strict=True)])


def find_nan(tree: Any, path: str = '') -> list[str]:
  """Paths of the NaN numbers in a report tree (``None`` is allowed).

  Example:
    >>> find_nan({'a': [1.0, float('nan')], 'b': {'c': None}})
    ['a/1']
  """
  if isinstance(tree, Mapping):
    return [p for k, v in tree.items() for p in find_nan(v, f'{path}/{k}')]
  if isinstance(tree, (list, tuple)):
    return [p for i, v in enumerate(tree) for p in find_nan(v, f'{path}/{i}')]
  if isinstance(tree, (float, np.floating)) and math.isnan(tree):
    return [path.lstrip('/')]
  return []


def check_finite(report: Mapping[str, Any]) -> None:
  """Raises if any number of the report is NaN.

  Raises:
    ValueError: naming the first NaN entries; nothing is written then.
  """
  bad = find_nan(report)
  if bad:
    raise ValueError(
        f'{len(bad)} reported metric(s) are NaN, e.g. '
        f'{bad[:5]}; refusing to write a report with NaN'
    )
