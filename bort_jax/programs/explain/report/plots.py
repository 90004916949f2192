"""The report's PNG figures, drawn with :mod:`bort_jax.programs.explain.figures`.

Per architecture, from the first seed's arrays: the reconstructions from
every layer and the saliency maps. Over all architectures, from the
numbers: Pearson r per layer, attack success per L2 budget and the sanity
check of every saliency method (means and 95% intervals over seeds).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from bort_jax.programs.explain import figures
from bort_jax.programs.explain.report.comparisons import ROLES

__all__ = ['write_figures']

_SALIENCY_METHODS = ('sat', 'gradient', 'integrated_gradients')


def write_figures(
    report: Mapping[str, Any], arrays_by_arch: Mapping[str, Any], out_dir: str
) -> dict[str, str]:
  """Writes the figures; returns ``{key: file name}``."""
  files: dict[str, str] = {}
  archs = report['architectures']
  seed = report['settings']['seeds'][0] if arrays_by_arch else None
  for arch, arrays in arrays_by_arch.items():
    layers = archs[arch]['summary']['bort']['reconstruction']['layers']
    title = f'{arch}, seed {seed}: '
    name = _reconstruction_layers(arrays, layers, out_dir, arch, title)
    files[f'{arch}/reconstruction_layers'] = name
    if 'sat' in arrays['bort']['saliency']:
      files[f'{arch}/saliency'] = _saliency_maps(arrays, out_dir, arch, title)
  summaries = (
      ('reconstruction_pearson', 'reconstruction_pearson.png', _pearson),
      ('adversarial_success', 'adversarial_success_vs_l2.png', _success),
      ('saliency_sanity', 'saliency_sanity.png', _sanity),
  )
  for key, name, draw in summaries:
    draw(archs, os.path.join(out_dir, name))
    files[key] = name
  return files


def _reconstruction_layers(
    arrays: Mapping[str, Any],
    layers: list[str],
    out_dir: str,
    arch: str,
    title: str,
) -> str:
  """Input, each role's reconstruction from every layer, the inversions."""
  name = f'{arch}_reconstruction_layers.png'
  rows = [('input', arrays['inputs'])]
  for role in ROLES:
    rows += [
        (f'{role}\n{layer}', arrays[role]['reconstruction'][layer])
        for layer in layers
    ]
  for role in ROLES:
    rows.append(
        (f'{role}\noptimisation\n{layers[-1]}', arrays[role]['inversion'])
    )
  figures.image_rows_figure(
      rows,
      os.path.join(out_dir, name),
      title=title + 'reconstruction with the transposed '
      'weights from each layer\n(same test images, pixel range [0, 1] '
      'for every row; last rows: optimisation-based inversion)',
  )
  return name


def _saliency_maps(
    arrays: Mapping[str, Any], out_dir: str, arch: str, title: str
) -> str:
  """Each role's SAT, gradient and integrated-gradients maps."""
  name = f'{arch}_saliency.png'
  maps = {
      f'{role}\n{method}': arrays[role]['saliency'][method]
      for method in _SALIENCY_METHODS
      for role in ROLES
  }
  figures.saliency_figure(
      arrays['inputs'],
      maps,
      os.path.join(out_dir, name),
      title=title + 'saliency maps (each scaled to its max)',
  )
  return name


def _pearson(archs: Mapping[str, Any], path: str) -> None:
  """Pearson r of the reconstruction from each layer, both methods."""
  panels = {}
  for arch, entry in archs.items():
    rec = {
        role: entry['summary'][role]['reconstruction']['chain']
        for role in ROLES
    }
    layers = entry['summary']['bort']['reconstruction']['layers']
    panels[arch] = {
        f'{role} {method}': [
            rec[role][method][layer]['pearson_r'] for layer in layers
        ]
        for method in ('transpose', 'pinv')
        for role in ROLES
    }
    panels[arch]['_layers'] = layers
  figures.interval_lines_figure(
      panels,
      path,
      ylabel='Pearson r (reconstruction, input)',
      title='Reconstruction from each layer down to the input: mean and 95% '
      'interval over seeds',
  )


def _success(archs: Mapping[str, Any], path: str) -> None:
  """Success rate of the targeted attack per L2 budget."""
  curves = {}
  for arch, entry in archs.items():
    success = {
        role: entry['summary'][role]['adversarial']['success_by_l2']
        for role in ROLES
    }
    budgets = list(success['bort'])
    curves[arch] = {role: [success[role][b] for b in budgets] for role in ROLES}
    curves[arch]['_layers'] = [float(b) for b in budgets]
  figures.interval_lines_figure(
      curves,
      path,
      ylabel='targeted success rate',
      xlabel='L2 budget (pixel units)',
      numeric_x=True,
      title='Targeted PGD-L2, the same attack on each model: success vs '
      'budget (mean and 95% interval over seeds)',
  )


def _sanity(archs: Mapping[str, Any], path: str) -> None:
  """Sanity-check rank correlation of every saliency method."""
  sanity = {}
  for arch, entry in archs.items():
    by_role = {
        role: entry['summary'][role]['saliency']['methods'] for role in ROLES
    }
    methods = [
        m for m in by_role['bort'] if 'sanity_spearman' in by_role['bort'][m]
    ]
    sanity[arch] = {
        role: [by_role[role][m]['sanity_spearman'] for m in methods]
        for role in ROLES
    }
    sanity[arch]['_layers'] = methods
  figures.interval_lines_figure(
      sanity,
      path,
      ylabel='Spearman(trained map, initial-network map)',
      title='Model-randomisation sanity check: near 1 = the map ignores '
      'what the network learned',
      markers_only=True,
  )
