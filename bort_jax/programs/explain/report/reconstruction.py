"""The reconstruction section of ``report.md``: one part per architecture."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bort_jax.programs.explain.report.comparisons import ROLES
from bort_jax.programs.explain.report.text import format_ci as ci
from bort_jax.programs.explain.report.text import table

__all__ = ['section']

_CHAIN_HEADER = [
    'method',
    'from layer',
    'r baseline',
    'r Bort',
    'r Bort - baseline',
    'affine MSE baseline',
    'affine MSE Bort',
    'ratio Bort/baseline',
    'SSIM baseline',
    'SSIM Bort',
    'pixel MSE baseline',
    'pixel MSE Bort',
]
_PER_LAYER_HEADER = [
    'method',
    'layer',
    'r baseline',
    'r Bort',
    'rel. MSE baseline',
    'rel. MSE Bort',
]


def section(report: Mapping[str, Any], files: Mapping[str, str]) -> list[str]:
  """Full-chain and per-layer tables of every architecture, and figures."""
  lines = []
  for arch, entry in report['architectures'].items():
    rec = {role: entry['summary'][role]['reconstruction'] for role in ROLES}
    comp = entry['comparisons']['reconstruction']
    lines += [f'### {arch}', '']
    lines += _chain_table(rec, comp)
    lines += _per_layer_table(rec)
    key = f'{arch}/reconstruction_layers'
    if key in files:
      lines += [f'![{arch} reconstructions per layer]({files[key]})', '']
  if 'reconstruction_pearson' in files:
    lines += [f'![Pearson r per layer]({files["reconstruction_pearson"]})', '']
  return lines


def _scores_row(
    label: str,
    layer: str,
    base: Mapping[str, Any],
    bort: Mapping[str, Any],
    comp: Mapping[str, Any],
) -> list[str]:
  return [
      label,
      layer,
      ci(base['pearson_r']),
      ci(bort['pearson_r']),
      ci(comp['pearson_r_difference']),
      ci(base['affine_mse'], 4),
      ci(bort['affine_mse'], 4),
      ci(comp['affine_mse_ratio']),
      ci(base['ssim']),
      ci(bort['ssim']),
      ci(base['mse'], 4),
      ci(bort['mse'], 4),
  ]


def _chain_table(rec: Mapping[str, Any], comp: Mapping[str, Any]) -> list[str]:
  """From each layer down to the input, then the optimisation-based inversion."""
  rows = [
      _scores_row(
          method,
          layer,
          rec['baseline']['chain'][method][layer],
          rec['bort']['chain'][method][layer],
          comp[method][layer],
      )
      for method in ('transpose', 'pinv')
      for layer in rec['bort']['layers']
  ]
  inv = {role: rec[role]['inversion'] for role in ROLES}
  label = (
      f'optimisation ({inv["bort"]["steps"]["mean"]:.0f} Adam '
      f'steps, {inv["bort"]["num_examples"]["mean"]:.0f} ex.)'
  )
  rows.append(
      _scores_row(
          label,
          inv['bort']['layer'],
          inv['baseline'],
          inv['bort'],
          comp['optimisation_top_layer'],
      )
  )
  bort = rec['bort']
  intro = (
      'Full chain, from the layer down to the input '
      f'({bort["num_examples"]["mean"]:.0f} test images; `pinv` on the first '
      f'{bort["num_pinv_examples"]["mean"]:.0f}, conjugate gradients with at '
      f'most {bort["pinv_maxiter"]["mean"]:.0f} iterations per convolution):'
  )
  return [intro, ''] + table(_CHAIN_HEADER, rows)


def _per_layer_table(rec: Mapping[str, Any]) -> list[str]:
  """Each layer's input recovered from its own output."""
  rows = []
  for method in ('transpose', 'pinv'):
    for layer in rec['bort']['per_layer'][method]:
      base = rec['baseline']['per_layer'][method][layer]
      bort = rec['bort']['per_layer'][method][layer]
      rows.append(
          [
              method,
              layer,
              ci(base['pearson_r']),
              ci(bort['pearson_r']),
              ci(base['relative_mse']),
              ci(bort['relative_mse']),
          ]
      )
  intro = (
      "Per layer: the layer's input recovered from its own output "
      '(before the activation; relative MSE = ||h_hat - h||^2 / ||h||^2; '
      f'the first {rec["bort"]["num_pinv_examples"]["mean"]:.0f} images):'
  )
  return [intro, ''] + table(_PER_LAYER_HEADER, rows)
