"""The saliency section of ``report.md``: one part per architecture."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bort_jax.programs.explain.report.comparisons import ROLES
from bort_jax.programs.explain.report.text import format_ci as ci
from bort_jax.programs.explain.report.text import table

__all__ = ['SANITY_THRESHOLD', 'section']

#: Trained-vs-initial rank correlation from which a sentence says "fails".
SANITY_THRESHOLD = 0.5

_HEADER = [
    'method',
    'sanity r_s baseline',
    'sanity r_s Bort',
    'deletion AUC baseline',
    'deletion AUC Bort',
    'insertion AUC baseline',
    'insertion AUC Bort',
]


def section(report: Mapping[str, Any], files: Mapping[str, str]) -> list[str]:
  """SAT's settings, the scores of every method, the sanity verdicts."""
  lines = []
  for arch, entry in report['architectures'].items():
    sal = {role: entry['summary'][role]['saliency'] for role in ROLES}
    sat = sal['bort']['sat']
    lines += [f'### {arch}', '', _describe_sat(sat), '']
    lines += table(_HEADER, _method_rows(sal))
    if sat:
      lines += [_sanity_verdict(role, sal[role]) for role in ROLES] + ['']
    key = f'{arch}/saliency'
    if key in files:
      lines += [f'![{arch} saliency]({files[key]})', '']
  if 'saliency_sanity' in files:
    lines += [f'![sanity check]({files["saliency_sanity"]})', '']
  return lines


def _describe_sat(sat: Mapping[str, Any] | None) -> str:
  if not sat:
    return 'No spatial layer: SAT not computed.'
  k, channels = sat['k']['mean'], sat['channels']['mean']
  keeps_all = (
      ' (k = min(256, C) keeps every channel: the top-k selection does '
      'nothing here)'
  )
  return (
      f'SAT from `{sat["layer"]}`, k = {k:.0f} of {channels:.0f} channels'
      + (keeps_all if k >= channels else '')
      + '.'
  )


def _method_rows(sal: Mapping[str, Any]) -> list[list[str]]:
  rows = []
  for method in sal['bort']['methods']:
    base = sal['baseline']['methods'][method]
    bort = sal['bort']['methods'][method]
    rows.append(
        [
            method,
            ci(base.get('sanity_spearman')),
            ci(bort.get('sanity_spearman')),
            ci(base['deletion_auc']),
            ci(bort['deletion_auc']),
            ci(base['insertion_auc']),
            ci(bort['insertion_auc']),
        ]
    )
  return rows


def _sanity_verdict(role: str, sal: Mapping[str, Any]) -> str:
  value = sal['methods']['sat']['sanity_spearman']['mean']
  verdict = 'fails' if value >= SANITY_THRESHOLD else 'passes'
  return (
      f'- SAT on the {role} model {verdict} the sanity check '
      f'(trained-vs-initial rank correlation {value:.2f}; '
      f'threshold used for this sentence: {SANITY_THRESHOLD}).'
  )
