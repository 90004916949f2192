"""Writes the whole report: figures, ``report.json`` and ``report.md``."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from bort_jax.programs.explain import aggregation
from bort_jax.programs.explain.report.markdown import write_markdown
from bort_jax.programs.explain.report.plots import write_figures

__all__ = ['write_report']


def write_report(
    report: dict[str, Any], arrays_by_arch: Mapping[str, Any], out_dir: str
) -> dict[str, str]:
  """Writes the figures, ``report.json`` and ``report.md`` into ``out_dir``.

  Args:
    report: the report; its ``figures`` entry is set to the figure files.
    arrays_by_arch: per architecture, the arrays of the first seed
      (images for the figures).
    out_dir: the report folder (created).

  Returns:
    ``{key: path}`` of every file written (``json``, ``markdown`` and one
    per figure).

  Raises:
    ValueError: a reported number is NaN (nothing is written).
  """
  aggregation.check_finite(report)
  os.makedirs(out_dir, exist_ok=True)
  files = write_figures(report, arrays_by_arch, out_dir)
  report['figures'] = files
  written = {k: os.path.join(out_dir, v) for k, v in files.items()}
  json_path = os.path.join(out_dir, 'report.json')
  with open(json_path, 'w') as f:
    json.dump(report, f, indent=1, default=_json_default)
  written['json'] = json_path
  written['markdown'] = write_markdown(report, out_dir)
  return written


def _json_default(value: Any) -> Any:
  if isinstance(value, (np.floating, np.integer)):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, tuple):
    return list(value)
  return str(value)
