"""The adversarial section of ``report.md``: one part per architecture."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bort_jax.programs.explain.report.comparisons import ROLES
from bort_jax.programs.explain.report.text import format_ci as ci
from bort_jax.programs.explain.report.text import table

__all__ = ['section']


def section(report: Mapping[str, Any], files: Mapping[str, str]) -> list[str]:
  """Success per L2 budget, then transfer and our procedure, per model."""
  lines = []
  for arch, entry in report['architectures'].items():
    adv = {role: entry['summary'][role]['adversarial'] for role in ROLES}
    difference = entry['comparisons']['adversarial_success_difference']
    lines += [f'### {arch}', '']
    lines += _success_table(adv, difference)
    lines += _model_table(adv)
  if 'adversarial_success' in files:
    lines += [f'![success vs L2]({files["adversarial_success"]})', '']
  return lines


def _success_table(
    adv: Mapping[str, Any], difference: Mapping[str, Any]
) -> list[str]:
  rows = [
      [
          budget,
          ci(adv['baseline']['success_by_l2'][budget]),
          ci(adv['bort']['success_by_l2'][budget]),
          ci(difference[budget]),
      ]
      for budget in adv['bort']['success_by_l2']
  ]
  return table(
      ['L2 budget', 'success baseline', 'success Bort', 'Bort - baseline'],
      rows,
  )


def _model_table(adv: Mapping[str, Any]) -> list[str]:
  rows = [
      [
          role,
          ci(adv[role]['l2_at_90'] or {'mean': None}),
          ci(adv[role]['transfer']['success_rate']),
          ci(adv[role]['pgd_target_likeness']),
          ci(adv[role]['ours']['success_rate']),
          ci(adv[role]['ours']['l2_median']),
          ci(adv[role]['ours']['target_likeness']),
      ]
      for role in ROLES
  ]
  budget = adv['bort']['transfer_budget']['mean']
  header = [
      'model',
      'L2 for 90%',
      f'transfer success (L2 {budget:g})',
      f'PGD target-likeness (L2 {budget:g})',
      'ours: success',
      'ours: median L2',
      'ours: target-likeness',
  ]
  return table(header, rows)
