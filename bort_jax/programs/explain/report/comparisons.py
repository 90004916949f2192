"""Paired Bort-vs-baseline comparisons and the protocol's acceptance criteria.

Comparisons are paired: Bort minus baseline (or Bort over baseline) per
seed, the seed fixing initialisation and data order, then averaged with a
95% Student-t interval (:func:`bort_jax.programs.explain.aggregation.confidence`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bort_jax.programs.explain import aggregation

__all__ = [
    'ACCEPTANCE_ARCHITECTURE',
    'ACCEPTANCE_LAYER',
    'ROLES',
    'acceptance',
    'comparisons',
]

#: The two runs compared on every architecture and seed.
ROLES = ('baseline', 'bort')
#: The architecture and layer of the protocol's acceptance criteria.
ACCEPTANCE_ARCHITECTURE = 'bort_invertible_cnn'
ACCEPTANCE_LAYER = 'down2_lrelu'

# ``getter(role, *keys)``: that entry of every seed's results, by seed.
_Getter = Callable[..., list[Any]]


def comparisons(per_seed: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
  """Paired Bort-vs-baseline comparisons of one architecture.

  Args:
    per_seed: ``{seed: {'baseline': results, 'bort': results}}`` of
      :func:`bort_jax.programs.explain.measure.measure_model` (plus
      ``test_accuracy``).

  Returns:
    ``accuracy_gap_points`` (baseline minus Bort, in points), per method
    and layer the differences of Pearson r and SSIM and the ratio of
    affine-fitted MSE (``reconstruction``), and per L2 budget the
    difference of the attack success rate (``adversarial_success``); each
    an interval over seeds (:func:`aggregation.confidence`).
  """
  seeds = sorted(per_seed)
  get = lambda role, *keys: [_dig(per_seed[s][role], keys) for s in seeds]
  first = per_seed[seeds[0]]['bort']
  out: dict[str, Any] = {}
  acc_base = get('baseline', 'test_accuracy')
  acc_bort = get('bort', 'test_accuracy')
  if None not in acc_base and None not in acc_bort:
    out['accuracy_gap_points'] = aggregation.confidence(
        [100.0 * (a - b) for a, b in zip(acc_base, acc_bort)]
    )
  out['reconstruction'] = _reconstruction_comparisons(
      get, first['reconstruction']['layers']
  )
  out['adversarial_success_difference'] = {
      budget: aggregation.paired_difference(
          get('bort', 'adversarial', 'success_by_l2', budget),
          get('baseline', 'adversarial', 'success_by_l2', budget),
      )
      for budget in first['adversarial']['success_by_l2']
  }
  return out


def _reconstruction_comparisons(
    get: _Getter, layers: list[str]
) -> dict[str, Any]:
  """Per method and layer, and for the optimisation-based inversion."""
  rec: dict[str, Any] = {}
  for method in ('transpose', 'pinv'):
    rec[method] = {}
    for layer in layers:
      keys = ('reconstruction', 'chain', method, layer)
      rec[method][layer] = _paired_scores(
          get('bort', *keys), get('baseline', *keys), ssim=True
      )
  keys = ('reconstruction', 'inversion')
  rec['optimisation_top_layer'] = _paired_scores(
      get('bort', *keys), get('baseline', *keys), ssim=False
  )
  return rec


def _paired_scores(
    bort: list[Mapping[str, float]],
    base: list[Mapping[str, float]],
    *,
    ssim: bool,
) -> dict[str, Any]:
  """Differences of Pearson r (and SSIM), ratio of the affine-fitted MSE."""
  column = lambda runs, key: [run[key] for run in runs]
  out = {
      'pearson_r_difference': aggregation.paired_difference(
          column(bort, 'pearson_r'), column(base, 'pearson_r')
      )
  }
  if ssim:
    out['ssim_difference'] = aggregation.paired_difference(
        column(bort, 'ssim'), column(base, 'ssim')
    )
  out['affine_mse_ratio'] = aggregation.paired_ratio(
      column(bort, 'affine_mse'), column(base, 'affine_mse')
  )
  return out


def _dig(tree: Any, keys: tuple[Any, ...]) -> Any:
  for key in keys:
    tree = tree[key]
  return tree


def acceptance(architectures: Mapping[str, Any]) -> dict[str, Any]:
  """The protocol's acceptance criteria, measured (met or not).

  On :data:`ACCEPTANCE_ARCHITECTURE`, Bort vs baseline, means over seeds:

  1. test accuracy gap (baseline minus Bort) at most 0.5 points;
  2. reconstruction from :data:`ACCEPTANCE_LAYER` with the transposed
     weights: Bort's Pearson r at least 0.9 and the baseline's at least 0.3
     lower;
  3. affine-fitted MSE ratio Bort/baseline (per seed, averaged) at most 0.3.

  Returns:
    ``{'criteria': [{name, value, threshold, met}, ...], 'all_met'}``, or
    ``{'evaluated': False, ...}`` when that architecture was not run.
  """
  arch = architectures.get(ACCEPTANCE_ARCHITECTURE)
  if arch is None:
    return {
        'evaluated': False,
        'reason': f'{ACCEPTANCE_ARCHITECTURE} was not among the models',
    }
  criteria = _criteria(arch['summary'], arch['comparisons'])
  return {
      'evaluated': True,
      'architecture': ACCEPTANCE_ARCHITECTURE,
      'criteria': criteria,
      'all_met': all(c['met'] for c in criteria),
  }


def _criteria(
    summary: Mapping[str, Any], comp: Mapping[str, Any]
) -> list[dict[str, Any]]:
  """The four criteria of :func:`acceptance`, each ``met`` or not."""
  r_bort, r_base = (
      summary[role]['reconstruction']['chain']['transpose'][ACCEPTANCE_LAYER][
          'pearson_r'
      ]
      for role in ('bort', 'baseline')
  )
  layer = comp['reconstruction']['transpose'][ACCEPTANCE_LAYER]
  ratio = layer['affine_mse_ratio']
  gap = comp.get('accuracy_gap_points')
  criteria = [
      {
          'name': 'accuracy gap baseline - Bort (points)',
          'value': gap,
          'threshold': '<= 0.5',
          'met': gap is not None and gap['mean'] <= 0.5,
      },
      {
          'name': f'Bort Pearson r from {ACCEPTANCE_LAYER} (transpose)',
          'value': r_bort,
          'threshold': '>= 0.9',
          'met': r_bort['mean'] >= 0.9,
      },
      {
          'name': f'Bort r - baseline r from {ACCEPTANCE_LAYER} (transpose)',
          'value': layer['pearson_r_difference'],
          'threshold': '>= 0.3',
          'met': r_bort['mean'] - r_base['mean'] >= 0.3,
      },
      {
          'name': f'affine-fitted MSE ratio Bort/baseline from '
          f'{ACCEPTANCE_LAYER} (transpose)',
          'value': ratio,
          'threshold': '<= 0.3',
          'met': ratio['mean'] <= 0.3,
      },
  ]
  for c in criteria:
    c['met'] = bool(c['met'])
  return criteria
