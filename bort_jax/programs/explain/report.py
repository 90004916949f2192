"""Writes the protocol's report: ``report.json``, PNG figures, ``report.md``.

Every number is the mean over seeds with its 95% Student-t interval
(``mean ± half-width``; with 3 seeds the t quantile is 4.30, so intervals
are wide). Comparisons are paired: Bort minus baseline (or Bort over
baseline) per seed, the seed fixing initialisation and data order, then
averaged. The protocol's acceptance criteria (:func:`acceptance`) are
computed from the numbers and stated met or not.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from bort_jax.programs.explain import figures, protocol

__all__ = [
    'ACCEPTANCE_ARCHITECTURE',
    'ACCEPTANCE_LAYER',
    'acceptance',
    'comparisons',
    'format_ci',
    'write_markdown',
    'write_report',
]

ROLES = ('baseline', 'bort')
#: The architecture and layer of the protocol's acceptance criteria.
ACCEPTANCE_ARCHITECTURE = 'bort_invertible_cnn'
ACCEPTANCE_LAYER = 'down2_lrelu'
_HEADLINE = ('pearson_r', 'affine_mse', 'ssim', 'mse')


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
    an interval over seeds (:func:`protocol.confidence`).
  """
  seeds = sorted(per_seed)
  get = lambda role, *keys: [_dig(per_seed[s][role], keys) for s in seeds]
  out: dict[str, Any] = {}
  acc_base, acc_bort = get('baseline', 'test_accuracy'), get(
      'bort', 'test_accuracy'
  )
  if None not in acc_base and None not in acc_bort:
    out['accuracy_gap_points'] = protocol.confidence(
        [100.0 * (a - b) for a, b in zip(acc_base, acc_bort)]
    )
  first = per_seed[seeds[0]]['bort']['reconstruction']
  rec: dict[str, Any] = {}
  for method in ('transpose', 'pinv'):
    rec[method] = {}
    for layer in first['layers']:
      keys = ('reconstruction', 'chain', method, layer)
      base = get('baseline', *keys)
      bort = get('bort', *keys)
      rec[method][layer] = {
          'pearson_r_difference': protocol.paired_difference(
              [b['pearson_r'] for b in bort], [a['pearson_r'] for a in base]
          ),
          'ssim_difference': protocol.paired_difference(
              [b['ssim'] for b in bort], [a['ssim'] for a in base]
          ),
          'affine_mse_ratio': protocol.paired_ratio(
              [b['affine_mse'] for b in bort], [a['affine_mse'] for a in base]
          ),
      }
  base = get('baseline', 'reconstruction', 'inversion')
  bort = get('bort', 'reconstruction', 'inversion')
  rec['optimisation_top_layer'] = {
      'pearson_r_difference': protocol.paired_difference(
          [b['pearson_r'] for b in bort], [a['pearson_r'] for a in base]
      ),
      'affine_mse_ratio': protocol.paired_ratio(
          [b['affine_mse'] for b in bort], [a['affine_mse'] for a in base]
      ),
  }
  out['reconstruction'] = rec
  budgets = per_seed[seeds[0]]['bort']['adversarial']['success_by_l2']
  out['adversarial_success_difference'] = {
      budget: protocol.paired_difference(
          get('bort', 'adversarial', 'success_by_l2', budget),
          get('baseline', 'adversarial', 'success_by_l2', budget),
      )
      for budget in budgets
  }
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
  summary, comp = arch['summary'], arch['comparisons']
  chain = {
      role: summary[role]['reconstruction']['chain']['transpose'][
          ACCEPTANCE_LAYER
      ]
      for role in ROLES
  }
  r_bort = chain['bort']['pearson_r']
  r_base = chain['baseline']['pearson_r']
  ratio = comp['reconstruction']['transpose'][ACCEPTANCE_LAYER][
      'affine_mse_ratio'
  ]
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
          'value': comp['reconstruction']['transpose'][ACCEPTANCE_LAYER][
              'pearson_r_difference'
          ],
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
  return {
      'evaluated': True,
      'architecture': ACCEPTANCE_ARCHITECTURE,
      'criteria': criteria,
      'all_met': all(c['met'] for c in criteria),
  }


def format_ci(entry: Any, digits: int = 3, scale: float = 1.0) -> str:
  """``mean ± half-width`` of a :func:`protocol.confidence` entry.

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


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
  return lines + ['']


def write_figures(
    report: Mapping[str, Any], arrays_by_arch: Mapping[str, Any], out_dir: str
) -> dict[str, str]:
  """Writes the figures; returns ``{key: file name}``."""
  files: dict[str, str] = {}
  archs = report['architectures']
  for arch, arrays in arrays_by_arch.items():
    layers = archs[arch]['summary']['bort']['reconstruction']['layers']
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
    seed = report['settings']['seeds'][0]
    figures.image_rows_figure(
        rows,
        os.path.join(out_dir, name),
        title=f'{arch}, seed {seed}: reconstruction with the transposed '
        'weights from each layer\n(same test images, pixel range [0, 1] '
        'for every row; last rows: optimisation-based inversion)',
    )
    files[f'{arch}/reconstruction_layers'] = name
    if 'sat' in arrays['bort']['saliency']:
      name = f'{arch}_saliency.png'
      maps = {
          f'{role}\n{method}': arrays[role]['saliency'][method]
          for method in ('sat', 'gradient', 'integrated_gradients')
          for role in ROLES
      }
      figures.saliency_figure(
          arrays['inputs'],
          maps,
          os.path.join(out_dir, name),
          title=f'{arch}, seed {seed}: saliency maps (each scaled to its max)',
      )
      files[f'{arch}/saliency'] = name
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
  files['reconstruction_pearson'] = 'reconstruction_pearson.png'
  figures.interval_lines_figure(
      panels,
      os.path.join(out_dir, files['reconstruction_pearson']),
      ylabel='Pearson r (reconstruction, input)',
      title='Reconstruction from each layer down to the input: mean and 95% '
      'interval over seeds',
  )
  curves = {}
  for arch, entry in archs.items():
    budgets = list(entry['summary']['bort']['adversarial']['success_by_l2'])
    curves[arch] = {
        role: [
            entry['summary'][role]['adversarial']['success_by_l2'][b]
            for b in budgets
        ]
        for role in ROLES
    }
    curves[arch]['_layers'] = [float(b) for b in budgets]
  files['adversarial_success'] = 'adversarial_success_vs_l2.png'
  figures.interval_lines_figure(
      curves,
      os.path.join(out_dir, files['adversarial_success']),
      ylabel='targeted success rate',
      xlabel='L2 budget (pixel units)',
      numeric_x=True,
      title='Targeted PGD-L2, the same attack on each model: success vs '
      'budget (mean and 95% interval over seeds)',
  )
  sanity = {}
  for arch, entry in archs.items():
    methods = list(entry['summary']['bort']['saliency']['methods'])
    methods = [
        m
        for m in methods
        if 'sanity_spearman'
        in entry['summary']['bort']['saliency']['methods'][m]
    ]
    sanity[arch] = {
        role: [
            entry['summary'][role]['saliency']['methods'][m]['sanity_spearman']
            for m in methods
        ]
        for role in ROLES
    }
    sanity[arch]['_layers'] = methods
  files['saliency_sanity'] = 'saliency_sanity.png'
  figures.interval_lines_figure(
      sanity,
      os.path.join(out_dir, files['saliency_sanity']),
      ylabel='Spearman(trained map, initial-network map)',
      title='Model-randomisation sanity check: near 1 = the map ignores '
      'what the network learned',
      markers_only=True,
  )
  return files


def write_report(
    report: dict[str, Any], arrays_by_arch: Mapping[str, Any], out_dir: str
) -> dict[str, str]:
  """Writes the figures, ``report.json`` and ``report.md`` into ``out_dir``.

  Raises:
    ValueError: a reported number is NaN (nothing is written).
  """
  protocol.check_finite(report)
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


def _runtime_lines(runtime: Mapping[str, Any]) -> list[str]:
  lines = []
  for key, value in runtime.items():
    if isinstance(value, Mapping):
      value = ', '.join(f'{k} {v:.0f} s' for k, v in value.items())
      lines.append(f'- {key}: {value}')
    else:
      lines.append(f'- {key}: {value:.0f} s')
  return lines


def _has_bort_term(run: Mapping[str, Any]) -> bool:
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
        {run[role]['gamma'] for run in runs if _has_bort_term(run[role])}
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


def write_markdown(report: Mapping[str, Any], out_dir: str) -> str:
  """(Re)writes ``report.md`` from a report (e.g. a loaded ``report.json``).

  Returns:
    The path of ``report.md``.
  """
  settings = report['settings']
  files = report.get('figures', {})
  ci = format_ci
  lines = [
      '# Bort explainability protocol (MNIST)',
      '',
      f'{describe_runs(report)}, seeds {settings["seeds"]}, for '
      f'{", ".join(settings["models"])}. {describe_intervals(settings["seeds"])} '
      'Comparisons are paired by seed (same initialisation '
      'and data order). Reconstruction numbers are in pixel units (images '
      'in [0, 1]).',
      '',
      '## Acceptance criteria',
      '',
  ]
  acc = report['acceptance']
  if not acc.get('evaluated'):
    lines += [f'Not evaluated: {acc.get("reason")}.', '']
  else:
    lines += _table(
        ['criterion', 'measured', 'threshold', 'met'],
        [
            [
                c['name'],
                ci(c['value']),
                c['threshold'],
                '**yes**' if c['met'] else '**no**',
            ]
            for c in acc['criteria']
        ],
    )
    lines += [f'All met: **{"yes" if acc["all_met"] else "no"}**.', '']
  lines += ['## Runs and accuracy', '']
  rows = []
  eval_counts = sorted(
      {
          str(run[role].get('eval_count'))
          for entry in report['architectures'].values()
          for run in entry['runs'].values()
          for role in ROLES
      }
  )
  for arch, entry in report['architectures'].items():
    for role in ROLES:
      info = next(iter(entry['runs'].values()))[role]
      train_seconds = [
          entry['runs'][s][role]['train_seconds'] for s in entry['runs']
      ]
      rows.append(
          [
              arch,
              role,
              info['optimizer'],
              info['gamma'] if _has_bort_term(info) else '- (no Bort term)',
              info['epochs'],
              info['train_examples'] or 'all',
              ci(entry['summary'][role]['test_accuracy'], 4),
              f'{sum(t or 0 for t in train_seconds):.0f}',
          ]
      )
    gap = entry['comparisons'].get('accuracy_gap_points')
    rows.append([arch, 'gap (points)', '', '', '', '', ci(gap, 2), ''])
  lines += _table(
      [
          'model',
          'run',
          'optimizer',
          'gamma',
          'epochs',
          'train examples',
          f'test accuracy ({", ".join(eval_counts)})',
          'train s (all seeds)',
      ],
      rows,
  )

  lines += [
      '## 1. Reconstruction',
      '',
      'From the output of each conv/dense layer (after its activation) down '
      "to the input. `transpose`: the Bort paper's backtracking map "
      "(transposed weights, default `auto` scaling); `pinv`: each layer's "
      'least-squares inverse (the fair baseline for a model not trained '
      'with Bort: it uses the same information without assuming '
      'orthogonality). Headline metrics are gain-invariant: Pearson r and '
      'the affine-fitted MSE (MSE after the best gain and offset; = '
      'var(x)(1 - r^2)), and SSIM of the reconstruction clipped to [0, 1]. '
      'Plain pixel MSE is secondary: it mostly measures brightness (a '
      'constant image scores about as well as a blurred digit). Pearson r '
      'and affine MSE are not gameable by rescaling; SSIM is sensitive to '
      'contrast and clipping.',
      '',
  ]
  for arch, entry in report['architectures'].items():
    summary, comp = entry['summary'], entry['comparisons']
    rec = {role: summary[role]['reconstruction'] for role in ROLES}
    lines += [f'### {arch}', '']
    rows = []
    for method in ('transpose', 'pinv'):
      for layer in rec['bort']['layers']:
        b = rec['baseline']['chain'][method][layer]
        t = rec['bort']['chain'][method][layer]
        c = comp['reconstruction'][method][layer]
        rows.append(
            [
                method,
                layer,
                ci(b['pearson_r']),
                ci(t['pearson_r']),
                ci(c['pearson_r_difference']),
                ci(b['affine_mse'], 4),
                ci(t['affine_mse'], 4),
                ci(c['affine_mse_ratio']),
                ci(b['ssim']),
                ci(t['ssim']),
                ci(b['mse'], 4),
                ci(t['mse'], 4),
            ]
        )
    inv = {role: rec[role]['inversion'] for role in ROLES}
    c = comp['reconstruction']['optimisation_top_layer']
    rows.append(
        [
            f'optimisation ({inv["bort"]["steps"]["mean"]:.0f} Adam '
            f'steps, {inv["bort"]["num_examples"]["mean"]:.0f} ex.)',
            inv['bort']['layer'],
            ci(inv['baseline']['pearson_r']),
            ci(inv['bort']['pearson_r']),
            ci(c['pearson_r_difference']),
            ci(inv['baseline']['affine_mse'], 4),
            ci(inv['bort']['affine_mse'], 4),
            ci(c['affine_mse_ratio']),
            ci(inv['baseline']['ssim']),
            ci(inv['bort']['ssim']),
            ci(inv['baseline']['mse'], 4),
            ci(inv['bort']['mse'], 4),
        ]
    )
    lines += [
        'Full chain, from the layer down to the input '
        f'({rec["bort"]["num_examples"]["mean"]:.0f} test images; '
        f'`pinv` on the first '
        f'{rec["bort"]["num_pinv_examples"]["mean"]:.0f}, conjugate '
        f'gradients with at most '
        f'{rec["bort"]["pinv_maxiter"]["mean"]:.0f} iterations per '
        'convolution):',
        '',
    ]
    lines += _table(
        [
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
        ],
        rows,
    )
    rows = []
    for method in ('transpose', 'pinv'):
      for layer in rec['bort']['per_layer'][method]:
        b = rec['baseline']['per_layer'][method][layer]
        t = rec['bort']['per_layer'][method][layer]
        rows.append(
            [
                method,
                layer,
                ci(b['pearson_r']),
                ci(t['pearson_r']),
                ci(b['relative_mse']),
                ci(t['relative_mse']),
            ]
        )
    lines += [
        "Per layer: the layer's input recovered from its own output "
        '(before the activation; relative MSE = ||h_hat - h||^2 / '
        f'||h||^2; the first '
        f'{rec["bort"]["num_pinv_examples"]["mean"]:.0f} images):',
        '',
    ]
    lines += _table(
        [
            'method',
            'layer',
            'r baseline',
            'r Bort',
            'rel. MSE baseline',
            'rel. MSE Bort',
        ],
        rows,
    )
    key = f'{arch}/reconstruction_layers'
    if key in files:
      lines += [f'![{arch} reconstructions per layer]({files[key]})', '']
  if 'reconstruction_pearson' in files:
    lines += [f'![Pearson r per layer]({files["reconstruction_pearson"]})', '']

  lines += [
      '## 2. Saliency',
      '',
      "SAT (the paper's backtracking saliency, from the top spatial layer) "
      'and the gradient baselines. Sanity check (Adebayo et al. 2018): '
      "Spearman rank correlation between a method's maps on the trained "
      'network and on the same network at its initialisation (same '
      "architecture, the run's init seed), mean over the examples. A "
      'method that explains what the network learned should score well '
      'below 1; near 1 it fails the check. Deletion AUC (lower is better) '
      'and insertion AUC (higher is better), deleted pixels set to black; '
      'both can be gamed by maps that track ink rather than the model '
      '(gradient x input and integrated gradients are zero on black pixels '
      'by construction).',
      '',
  ]
  for arch, entry in report['architectures'].items():
    summary = entry['summary']
    sal = {role: summary[role]['saliency'] for role in ROLES}
    lines += [f'### {arch}', '']
    sat = sal['bort']['sat']
    if sat:
      k, channels = sat['k']['mean'], sat['channels']['mean']
      lines += [
          f'SAT from `{sat["layer"]}`, k = {k:.0f} of {channels:.0f} '
          'channels'
          + (
              ' (k = min(256, C) keeps every channel: the '
              'top-k selection does nothing here)'
              if k >= channels
              else ''
          )
          + '.',
          '',
      ]
    else:
      lines += ['No spatial layer: SAT not computed.', '']
    rows = []
    for method in sal['bort']['methods']:
      b, t = sal['baseline']['methods'][method], sal['bort']['methods'][method]
      rows.append(
          [
              method,
              ci(b.get('sanity_spearman')),
              ci(t.get('sanity_spearman')),
              ci(b['deletion_auc']),
              ci(t['deletion_auc']),
              ci(b['insertion_auc']),
              ci(t['insertion_auc']),
          ]
      )
    lines += _table(
        [
            'method',
            'sanity r_s baseline',
            'sanity r_s Bort',
            'deletion AUC baseline',
            'deletion AUC Bort',
            'insertion AUC baseline',
            'insertion AUC Bort',
        ],
        rows,
    )
    if sat:
      for role in ROLES:
        value = sal[role]['methods']['sat']['sanity_spearman']['mean']
        verdict = 'fails' if value >= 0.5 else 'passes'
        lines.append(
            f'- SAT on the {role} model {verdict} the sanity check '
            f'(trained-vs-initial rank correlation {value:.2f}; '
            'threshold used for this sentence: 0.5).'
        )
      lines.append('')
    key = f'{arch}/saliency'
    if key in files:
      lines += [f'![{arch} saliency]({files[key]})', '']
  if 'saliency_sanity' in files:
    lines += [f'![sanity check]({files["saliency_sanity"]})', '']

  lines += [
      '## 3. Adversarial samples',
      '',
      'The same attack on every model: targeted PGD-L2 (random target '
      'class other than the label), at fixed L2 budgets in pixel units; '
      'a model whose success needs a larger budget is more robust. '
      '`L2 for 90%`: the smallest budget at which the success rate reaches '
      '0.9 (interpolated; `not reached` if some seed never does). Transfer: '
      'the samples at the transfer budget, classified by an independently '
      "trained model (the next seed's model of the same optimizer). "
      '`ours`: our backtracking procedure (not from the paper), with its '
      'own success rate and median L2. Target-likeness (cosine between the '
      'perturbation and the difference of the class-mean images) is kept '
      'as one column; it is weak: it rewards perturbations that look like '
      'a fixed class template whatever the model computes, and when it '
      'rises on a Bort model for PGD as much as for ours, it measures the '
      "model's gradient geometry, not an explanation.",
      '',
  ]
  for arch, entry in report['architectures'].items():
    summary, comp = entry['summary'], entry['comparisons']
    adv = {role: summary[role]['adversarial'] for role in ROLES}
    budgets = list(adv['bort']['success_by_l2'])
    lines += [f'### {arch}', '']
    rows = [
        [
            budget,
            ci(adv['baseline']['success_by_l2'][budget]),
            ci(adv['bort']['success_by_l2'][budget]),
            ci(comp['adversarial_success_difference'][budget]),
        ]
        for budget in budgets
    ]
    lines += _table(
        ['L2 budget', 'success baseline', 'success Bort', 'Bort - baseline'],
        rows,
    )
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
    lines += _table(
        [
            'model',
            'L2 for 90%',
            f'transfer success (L2 ' f'{budget:g})',
            f'PGD target-likeness (L2 {budget:g})',
            'ours: success',
            'ours: median L2',
            'ours: target-likeness',
        ],
        rows,
    )
  if 'adversarial_success' in files:
    lines += [f'![success vs L2]({files["adversarial_success"]})', '']

  lines += ['## Settings and runtime', '']
  lines += [f'- `{k}`: {v}' for k, v in settings.items()]
  lines += _runtime_lines(report['runtime_seconds'])
  lines.append('')
  if report.get('notes'):
    lines += ['## Notes', ''] + [f'- {n}' for n in report['notes']] + ['']
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
