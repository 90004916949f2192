"""``report.md``: the template ``template.md`` filled with one text per section.

The fixed prose of the report lives in ``template.md`` (shipped with the
package); each ``$name`` there is one section written here or in the
modules of the three measured claims (:mod:`.reconstruction`,
:mod:`.saliency`, :mod:`.adversarial`).
"""

from __future__ import annotations

import importlib.resources
import os
import string
from collections.abc import Mapping
from typing import Any

from bort_jax.programs.explain.report import adversarial, reconstruction
from bort_jax.programs.explain.report import saliency
from bort_jax.programs.explain.report.comparisons import ROLES
from bort_jax.programs.explain.report.text import (
    block,
    describe_intervals,
    describe_runs,
    format_ci,
    has_bort_term,
    table,
)

__all__ = ['render_markdown', 'write_markdown']

TEMPLATE = 'template.md'


def write_markdown(report: Mapping[str, Any], out_dir: str) -> str:
  """(Re)writes ``report.md`` from a report (e.g. a loaded ``report.json``).

  Returns:
    The path of ``report.md``.
  """
  md_path = os.path.join(out_dir, 'report.md')
  with open(md_path, 'w') as f:
    f.write(render_markdown(report))
  return md_path


def render_markdown(report: Mapping[str, Any]) -> str:
  """The text of ``report.md`` for a report."""
  settings = report['settings']
  files = report.get('figures', {})
  template = importlib.resources.files(__package__).joinpath(TEMPLATE)
  return string.Template(template.read_text(encoding='utf-8')).substitute(
      runs_description=describe_runs(report),
      seeds=settings['seeds'],
      models=', '.join(settings['models']),
      intervals=describe_intervals(settings['seeds']),
      acceptance=block(acceptance_section(report['acceptance'])),
      runs=block(runs_section(report['architectures'])),
      reconstruction=block(reconstruction.section(report, files)),
      saliency=block(saliency.section(report, files)),
      adversarial=block(adversarial.section(report, files)),
      settings=block(settings_section(settings, report['runtime_seconds'])),
      notes=notes_section(report.get('notes')),
  )


def acceptance_section(acc: Mapping[str, Any]) -> list[str]:
  """The criteria, measured, and whether all are met."""
  if not acc.get('evaluated'):
    return [f'Not evaluated: {acc.get("reason")}.']
  rows = [
      [
          c['name'],
          format_ci(c['value']),
          c['threshold'],
          '**yes**' if c['met'] else '**no**',
      ]
      for c in acc['criteria']
  ]
  return table(['criterion', 'measured', 'threshold', 'met'], rows) + [
      f'All met: **{"yes" if acc["all_met"] else "no"}**.'
  ]


def runs_section(architectures: Mapping[str, Any]) -> list[str]:
  """One row per architecture and role, then the accuracy gap."""
  rows = []
  for arch, entry in architectures.items():
    for role in ROLES:
      rows.append(_run_row(arch, role, entry))
    gap = entry['comparisons'].get('accuracy_gap_points')
    rows.append([arch, 'gap (points)', '', '', '', '', format_ci(gap, 2), ''])
  eval_counts = sorted(
      {
          str(run[role].get('eval_count'))
          for entry in architectures.values()
          for run in entry['runs'].values()
          for role in ROLES
      }
  )
  header = [
      'model',
      'run',
      'optimizer',
      'gamma',
      'epochs',
      'train examples',
      f'test accuracy ({", ".join(eval_counts)})',
      'train s (all seeds)',
  ]
  return table(header, rows)


def _run_row(arch: str, role: str, entry: Mapping[str, Any]) -> list[Any]:
  """The first seed's settings, the accuracy, the training time of all seeds."""
  info = next(iter(entry['runs'].values()))[role]
  train_seconds = [
      entry['runs'][s][role]['train_seconds'] for s in entry['runs']
  ]
  return [
      arch,
      role,
      info['optimizer'],
      info['gamma'] if has_bort_term(info) else '- (no Bort term)',
      info['epochs'],
      info['train_examples'] or 'all',
      format_ci(entry['summary'][role]['test_accuracy'], 4),
      f'{sum(t or 0 for t in train_seconds):.0f}',
  ]


def settings_section(
    settings: Mapping[str, Any], runtime: Mapping[str, Any]
) -> list[str]:
  """One item per setting, then the runtimes in seconds."""
  lines = [f'- `{k}`: {v}' for k, v in settings.items()]
  for key, value in runtime.items():
    if isinstance(value, Mapping):
      value = ', '.join(f'{k} {v:.0f} s' for k, v in value.items())
      lines.append(f'- {key}: {value}')
    else:
      lines.append(f'- {key}: {value:.0f} s')
  return lines


def notes_section(notes: list[str] | None) -> str:
  """The notes after the settings, or nothing when there are none."""
  if not notes:
    return ''
  return '\n'.join(['', '', '## Notes', ''] + [f'- {n}' for n in notes])
