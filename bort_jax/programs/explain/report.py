"""Writes the explainability report: ``report.json``, PNG figures, ``report.md``.

The claims are checked from the numbers with fixed criteria stated in the
report (they are not tuned to pass):

1. *Reconstruction*: from the top convolutional layer of the invertible
   CNN, the Bort model's reconstruction MSE is at most half the
   baseline's, and its SSIM is higher.
2. *Saliency*: the Bort model's SAT maps put more of their mass on the digit
   strokes than the baseline's (and more than the strokes' share of the
   image); deletion AUCs of every method are listed side by side.
3. *Adversarial samples*: our procedure's targeted success rate, its
   perturbation norms, and whether its perturbations on the Bort model look
   more like the target class (target-likeness) than FGSM's and PGD's.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from bort_jax.programs.explain import figures

__all__ = ['MARGINAL', 'check_claims', 'write_figures', 'write_markdown', 'write_report']

#: Relative margins below this make a verdict "marginal".
MARGINAL = 0.1

_SALIENCY_METHODS = ('sat', 'gradient', 'gradient_x_input', 'integrated_gradients', 'random')
_FIGURE_ATTACKS = ('ours', 'fgsm_linf_0.2', 'pgd_linf_0.2', 'pgd_l2_matched')


def _mean(entry: Mapping[str, Any]) -> float:
  return float(entry['mean'])


def check_claims(results: Mapping[str, Any]) -> dict[str, Any]:
  """Evaluates the three claims on one architecture's results.

  Args:
    results: :func:`bort_jax.programs.explain.experiment.analyse` results with models
      ``'baseline'`` and ``'bort'``.

  Returns:
    ``{'reconstruction': {...}, 'saliency': {...}, 'adversarial': {...}}``,
    each with the numbers compared, the criterion, ``held`` (bool, or
    ``None`` where the section was not computed) and ``margin``, the
    relative distance of the deciding number from its threshold (positive
    when it held; below :data:`MARGINAL` the verdict says "marginally").
  """
  claims: dict[str, Any] = {}
  rec = results['reconstruction']
  top = rec['bort']['top_layer']
  base_top, bort_top = rec['baseline']['layers'][top], rec['bort']['layers'][top]
  ratio = _mean(bort_top['mse']) / _mean(base_top['mse'])
  row_ratio = (_mean(rec['bort']['top_layer_row_scaling']['mse'])
               / _mean(rec['baseline']['top_layer_row_scaling']['mse']))
  claims['reconstruction'] = {
    'criterion': 'MSE(bort) <= 0.5 * MSE(baseline) and SSIM(bort) > SSIM(baseline), '
                 f'reconstruction from {top!r}, default (auto) scaling',
    'layer': top,
    'mse_baseline': _mean(base_top['mse']),
    'mse_bort': _mean(bort_top['mse']),
    'mse_ratio': ratio,
    'ssim_baseline': _mean(base_top['ssim']),
    'ssim_bort': _mean(bort_top['ssim']),
    'mse_ratio_row_scaling': row_ratio,
    'ssim_baseline_row_scaling': _mean(rec['baseline']['top_layer_row_scaling']['ssim']),
    'ssim_bort_row_scaling': _mean(rec['bort']['top_layer_row_scaling']['ssim']),
    'held': bool(ratio <= 0.5 and _mean(bort_top['ssim']) > _mean(base_top['ssim'])),
    'margin': (0.5 - ratio) / 0.5,
  }
  sal = results.get('saliency', {})
  if 'bort' in sal and 'baseline' in sal:
    area = _mean(sal['bort']['stroke_area_fraction'])
    base_mass = _mean(sal['baseline']['sat']['mass_on_strokes'])
    bort_mass = _mean(sal['bort']['sat']['mass_on_strokes'])
    claims['saliency'] = {
      'criterion': 'share of the SAT map on stroke pixels: bort > baseline and > stroke area',
      'stroke_area_fraction': area,
      'sat_mass_on_strokes_baseline': base_mass,
      'sat_mass_on_strokes_bort': bort_mass,
      'deletion_auc': {
        model: {m: _mean(sal[model][m]['deletion_auc']) for m in _SALIENCY_METHODS}
        for model in ('baseline', 'bort')},
      'held': bool(bort_mass > base_mass and bort_mass > area),
      'margin': (bort_mass - base_mass) / base_mass,
    }
  else:
    claims['saliency'] = {'held': None, 'criterion': 'no spatial feature map (not computed)'}
  adv = results['adversarial']
  ours = adv['bort']['ours']
  gradient_attacks = [k for k in adv['bort'] if k != 'ours']
  best_other = max(_mean(adv['bort'][k]['target_likeness']) for k in gradient_attacks)
  claims['adversarial'] = {
    'criterion': 'on the Bort model, our samples reach the target class for most examples '
                 '(success >= 0.9) and their perturbations are more target-like than every '
                 'FGSM/PGD perturbation',
    'success_ours_bort': ours['success_rate_targeted'],
    'success_ours_baseline': adv['baseline']['ours']['success_rate_targeted'],
    'l2_ours_bort': _mean(ours['l2']),
    'target_likeness_ours_bort': _mean(ours['target_likeness']),
    'target_likeness_ours_baseline': _mean(adv['baseline']['ours']['target_likeness']),
    'target_likeness_best_gradient_attack_bort': best_other,
    'held': bool(ours['success_rate_targeted'] >= 0.9
                 and _mean(ours['target_likeness']) > best_other),
    'margin': (_mean(ours['target_likeness']) - best_other) / abs(best_other),
  }
  return claims


def write_figures(arrays: Mapping[str, Any], out_dir: str, prefix: str) -> dict[str, str]:
  """Writes every figure of one architecture; returns ``{key: file name}``."""
  files: dict[str, str] = {}
  inputs = arrays['inputs']
  models = [m for m in ('baseline', 'bort') if m in arrays['reconstruction']]

  def path(name):
    files[name] = f'{prefix}_{name}.png'
    return os.path.join(out_dir, files[name])

  for model in models:
    figures.reconstruction_figure(
      inputs, arrays['reconstruction'][model], path(f'reconstruction_{model}'),
      title=f'{prefix} {model}: reconstruction from each layer (pixel range [0, 1])')
  rec_rows = [('input', inputs)]
  for model in models:
    top = arrays['top_layer'][model]
    rec_rows.append((f'{model}\nbacktrack', arrays['reconstruction'][model][top]))
  for model in models:
    rec_rows.append((f'{model}\nrow scaling', arrays['reconstruction'][model + '_row']))
  for model in models:
    rec_rows.append((f'{model}\noptim. inversion', arrays['inversion'][model]))
  figures.image_rows_figure(rec_rows, path('reconstruction_top'),
                            title=f'{prefix}: reconstruction from the top layer')
  if all(m in arrays['saliency'] for m in models) and models:
    maps = {}
    for method in _SALIENCY_METHODS[:-1]:
      for model in models:
        maps[f'{model}\n{method}'] = arrays['saliency'][model][method]
    figures.saliency_figure(inputs, maps, path('saliency'),
                            title=f'{prefix}: saliency maps (each scaled to its max)')
  for model in models:
    attacks = {k: v for k, v in arrays['adversarial'][model].items() if k in _FIGURE_ATTACKS}
    figures.adversarial_figure(
      inputs, attacks, arrays['labels'], arrays['targets'], path(f'adversarial_{model}'),
      title=f'{prefix} {model}: targeted adversarial samples and perturbations')
  figures.gram_figure({m: arrays['gram'][m] for m in models}, path('gram'),
                      title=f'{prefix}: Gram matrix per layer (units, or inputs if '
                            'overcomplete) / mean diagonal')
  return files


def _fmt(value: Any, digits: int = 4) -> str:
  if isinstance(value, Mapping) and 'mean' in value:
    value = value['mean']
  if value is None:
    return 'n/a'
  if isinstance(value, bool):
    return 'yes' if value else 'no'
  if isinstance(value, (int, float)):
    if not math.isfinite(value):
      return str(value)
    return f'{value:.{digits}g}'
  return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(_fmt(c) for c in row) + ' |' for row in rows]
  return lines + ['']


def _verdict(claim: Mapping[str, Any]) -> str:
  held = claim['held']
  if held is None:
    return 'not evaluated'
  marginal = abs(claim.get('margin', 1.0)) < MARGINAL
  if held:
    return '**held, marginally**' if marginal else '**held**'
  return '**did not hold, narrowly**' if marginal else '**did not hold**'


def _architecture_section(arch: str, entry: Mapping[str, Any], files: Mapping[str, str]
                          ) -> list[str]:
  res, claims = entry['results'], entry['claims']
  models = entry['models']
  lines = [f'## {arch}', '']
  lines += _table(
    ['model', 'optimizer', 'gamma', 'test accuracy', 'train seconds', 'epochs'],
    [[m, models[m].get('optimizer'), models[m].get('gamma'), models[m].get('test_accuracy'),
      models[m].get('train_seconds'), models[m].get('epochs')] for m in models])
  orth = res['orthogonality']
  layers = list(orth['baseline'])
  lines += ['Orthogonality of the kernels (`relative_error` = ||G - I||_F / ||I||_F of the '
            'Gram on the smaller side, 0 = bounded orthogonal; `mean_abs_cosine` between '
            'units):', '']
  lines += _table(
    ['layer'] + [f'{m} rel. error' for m in orth] + [f'{m} mean abs cos' for m in orth],
    [[layer] + [orth[m][layer]['relative_error'] for m in orth]
     + [orth[m][layer]['mean_abs_cosine'] for m in orth] for layer in layers])
  lines += [f'![Gram matrices]({files["gram"]})', '']

  rc = claims['reconstruction']
  lines += ['### 1. Reconstruction (backtracking with transposed weights)', '',
            f'Criterion: {rc["criterion"]}. Result: {_verdict(rc)}. '
            f'MSE ratio bort/baseline = {_fmt(rc["mse_ratio"])}; SSIM baseline '
            f'{_fmt(rc["ssim_baseline"])}, bort {_fmt(rc["ssim_bort"])}. With the paper\'s '
            f'per-unit 1/||w||^2 scaling in every layer (`row`) the ratio is '
            f'{_fmt(rc["mse_ratio_row_scaling"])} (SSIM baseline '
            f'{_fmt(rc["ssim_baseline_row_scaling"])}, bort {_fmt(rc["ssim_bort_row_scaling"])}).',
            '', 'Per layer (pixel units in [0, 1]; mean over the analysed test examples):', '']
  rec = res['reconstruction']
  lines += _table(
    ['layer', 'MSE baseline', 'MSE bort', 'PSNR baseline', 'PSNR bort', 'SSIM baseline',
     'SSIM bort'],
    [[layer, rec['baseline']['layers'][layer]['mse'], rec['bort']['layers'][layer]['mse'],
      rec['baseline']['layers'][layer]['psnr'], rec['bort']['layers'][layer]['psnr'],
      rec['baseline']['layers'][layer]['ssim'], rec['bort']['layers'][layer]['ssim']]
     for layer in rec['baseline']['layers']])
  inv = res['inversion']
  lines += ['Optimisation-based inversion (Mahendran & Vedaldi 2015, Adam + TV prior) from '
            f'the same layer, for reference ({inv["bort"]["num_examples"]} examples):', '']
  lines += _table(['model', 'MSE', 'PSNR', 'SSIM', 'seconds'],
                  [[m, inv[m]['mse'], inv[m]['psnr'], inv[m]['ssim'], inv[m]['seconds']]
                   for m in inv])
  lines += [f'![top-layer reconstructions]({files["reconstruction_top"]})', '',
            f'![baseline per layer]({files["reconstruction_baseline"]})', '',
            f'![bort per layer]({files["reconstruction_bort"]})', '']

  sc = claims['saliency']
  lines += ['### 2. Saliency', '']
  if sc['held'] is None:
    lines += ['Not computed: the model has no spatial feature map.', '']
  else:
    sal = res['saliency']
    lines += [f'SAT from layer `{sal["bort"]["layer"]}` with k = {sal["bort"]["k"]} '
              '(the paper\'s 256 lowered to the channel count), B = 1000, tau = 3. '
              f'Criterion: {sc["criterion"]}. Result: {_verdict(sc)}: '
              f'{_fmt(sc["sat_mass_on_strokes_bort"])} (bort) vs '
              f'{_fmt(sc["sat_mass_on_strokes_baseline"])} (baseline); the strokes cover '
              f'{_fmt(sc["stroke_area_fraction"])} of the image (what a uniform map gets), '
              f'so {1 - sc["sat_mass_on_strokes_bort"]:.0%} (bort) and '
              f'{1 - sc["sat_mass_on_strokes_baseline"]:.0%} (baseline) of the SAT mass lies '
              'off the strokes.',
              '', 'Deletion AUC (lower is better), insertion AUC (higher is better) and share '
              'of the map on the strokes. Deleted pixels are set to black; the gradient x '
              'input and integrated-gradients maps are zero on black pixels by construction '
              '(their baseline is the black image), so their stroke share is high by design.',
              '']
    lines += _table(
      ['method', 'deletion baseline', 'deletion bort', 'insertion baseline',
       'insertion bort', 'on strokes baseline', 'on strokes bort'],
      [[m, sal['baseline'][m]['deletion_auc'], sal['bort'][m]['deletion_auc'],
        sal['baseline'][m]['insertion_auc'], sal['bort'][m]['insertion_auc'],
        sal['baseline'][m]['mass_on_strokes'], sal['bort'][m]['mass_on_strokes']]
       for m in _SALIENCY_METHODS])
    lines += [f'![saliency]({files["saliency"]})', '']
    if 'deletion_curves' in files:
      lines += [f'![deletion curves]({files["deletion_curves"]})', '']

  ac = claims['adversarial']
  adv = res['adversarial']
  lines += ['### 3. Adversarial samples', '',
            'Targeted (a random class other than the label). `ours`: move the representation '
            'along the classifier direction w_t - w_c, map the change back with the '
            'backtracking map, search the step with forward passes only (no gradients). '
            '`pgd_l2_matched`: PGD-L2 with our median L2 norm as its radius. Norms in pixel '
            'units; target-likeness = cos(perturbation, mean image of the target class - '
            'mean image of the source class).', '',
            f'Criterion: {ac["criterion"]}. Result: {_verdict(ac)}.', '']
  lines += _table(
    ['attack', 'model', 'targeted success', 'untargeted success', 'L2', 'Linf',
     'target-likeness'],
    [[a, m, adv[m][a]['success_rate_targeted'], adv[m][a]['success_rate_untargeted'],
      adv[m][a]['l2'], adv[m][a]['linf'], adv[m][a]['target_likeness']]
     for a in adv['bort'] for m in ('baseline', 'bort')])
  lines += [f'![adversarial, baseline]({files["adversarial_baseline"]})', '',
            f'![adversarial, bort]({files["adversarial_bort"]})', '']
  return lines


def write_report(report: dict[str, Any], arrays_by_arch: Mapping[str, Any], out_dir: str
                 ) -> dict[str, str]:
  """Writes the figures, ``report.json`` and ``report.md`` into ``out_dir``.

  Args:
    report: ``{'settings': {...}, 'runtime_seconds': {...}, 'notes': [...],
      'architectures': {arch: {'models': {...}, 'results': {...}}}}``; the
      claims (:func:`check_claims`) and the figure file names are added.
    arrays_by_arch: ``{arch: arrays}`` from
      :func:`bort_jax.programs.explain.experiment.analyse`.
    out_dir: the report folder (created).

  Returns:
    ``{'json': path, 'markdown': path, '<arch>/<figure>': path, ...}``.
  """
  os.makedirs(out_dir, exist_ok=True)
  written: dict[str, str] = {}
  for arch, entry in report['architectures'].items():
    files = write_figures(arrays_by_arch[arch], out_dir, arch)
    sal = entry['results'].get('saliency', {})
    if 'bort' in sal:
      curves = {f'{model} {method}': sal[model][method]['deletion_curve_mean']
                for method in ('sat', 'gradient', 'integrated_gradients', 'random')
                for model in ('baseline', 'bort')}
      files['deletion_curves'] = f'{arch}_deletion_curves.png'
      figures.curves_figure(curves, os.path.join(out_dir, files['deletion_curves']),
                            title=f'{arch}: deletion curves (mean over examples)')
    entry['figures'] = files
    written.update({f'{arch}/{k}': os.path.join(out_dir, v) for k, v in files.items()})
  written['markdown'] = write_markdown(report, out_dir)
  json_path = os.path.join(out_dir, 'report.json')
  with open(json_path, 'w') as f:
    json.dump(report, f, indent=1, default=_json_default)
  written['json'] = json_path
  return written


def write_markdown(report: dict[str, Any], out_dir: str) -> str:
  """(Re)writes ``report.md`` from a report (e.g. a loaded ``report.json``).

  The claims are recomputed from the results with :func:`check_claims` and
  stored in ``report``; the figures must already be in ``out_dir``, named as
  in ``report['architectures'][arch]['figures']``.

  Returns:
    The path of ``report.md``.
  """
  for entry in report['architectures'].values():
    entry['claims'] = check_claims(entry['results'])
  settings = report['settings']
  lines = ['# Bort explainability report (MNIST)', '',
           'Baseline: `optax.adamw`; Bort: `bort_jax.bort_adamw` with the same learning rate, '
           'schedule and weight decay. Every number is a mean over the analysed test '
           'examples; medians and standard deviations are in `report.json`. A verdict is '
           f'"marginal" when the deciding number is within {MARGINAL:.0%} (relative) of '
           'its threshold.', '',
           '## Settings', '']
  lines += [f'- `{k}`: {v}' for k, v in settings.items()]
  lines += ['- runtime: ' + ', '.join(f'{k} {v:.0f} s' for k, v in
                                      report['runtime_seconds'].items()), '']
  if report.get('notes'):
    lines += ['## Notes', ''] + [f'- {n}' for n in report['notes']] + ['']
  lines += ['## Claims', '']
  for arch, entry in report['architectures'].items():
    claims = entry['claims']
    rc = claims['reconstruction']
    lines.append(
      f'- {arch}, (1) reconstruction from `{rc["layer"]}`: {_verdict(rc)} '
      f'(MSE bort/baseline = {_fmt(rc["mse_ratio"])}, SSIM {_fmt(rc["ssim_bort"])} vs '
      f'{_fmt(rc["ssim_baseline"])}).')
    sc = claims['saliency']
    if sc['held'] is not None:
      lines.append(
        f'- {arch}, (2) SAT on the strokes: {_verdict(sc)} (share on strokes '
        f'{_fmt(sc["sat_mass_on_strokes_bort"])} bort vs '
        f'{_fmt(sc["sat_mass_on_strokes_baseline"])} baseline, stroke area '
        f'{_fmt(sc["stroke_area_fraction"])}; SAT deletion AUC '
        f'{_fmt(sc["deletion_auc"]["bort"]["sat"])} bort vs '
        f'{_fmt(sc["deletion_auc"]["baseline"]["sat"])} baseline).')
    ac = claims['adversarial']
    lines.append(
      f'- {arch}, (3) explainable adversarial samples: {_verdict(ac)} (success '
      f'{_fmt(ac["success_ours_bort"])}, L2 {_fmt(ac["l2_ours_bort"])}, target-likeness '
      f'{_fmt(ac["target_likeness_ours_bort"])} vs best FGSM/PGD '
      f'{_fmt(ac["target_likeness_best_gradient_attack_bort"])}).')
  lines.append('')
  for arch, entry in report['architectures'].items():
    lines += _architecture_section(arch, entry, entry['figures'])
  md_path = os.path.join(out_dir, 'report.md')
  with open(md_path, 'w') as f:
    f.write('\n'.join(lines))
  return md_path


def _json_default(value: Any) -> Any:
  if isinstance(value, (np.floating, np.integer)):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, tuple):
    return list(value)
  return str(value)
