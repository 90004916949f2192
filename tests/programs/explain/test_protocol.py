"""The multi-seed protocol of bort-explain: configs, aggregation over seeds,
the saliency sanity check, the measurements on an exactly invertible toy
model, and the report writer."""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest
from testing import make_lossless_cnn, mlp, uniform

from bort_jax import explain
from bort_jax.programs.explain import experiment, measure, protocol, report


def test_protocol_configs_pairs_and_layout():
  runs = protocol.protocol_configs(
      ['bort_invertible_cnn', 'mlp'],
      [0, 2],
      epochs={'mlp': 3},
      train_examples={'bort_invertible_cnn': 100},
  )
  assert set(runs) == {'bort_invertible_cnn', 'mlp'}
  assert set(runs['mlp']) == {0, 2}
  pair = runs['bort_invertible_cnn'][2]
  assert pair['baseline'].optimizer == 'adamw'
  assert pair['baseline'].gamma == 0.0
  assert pair['bort'].optimizer == 'bort_adamw'
  # One gamma for every architecture: the preset recipe's.
  assert pair['bort'].gamma == 30.0
  assert runs['mlp'][0]['bort'].gamma == 30.0
  assert pair['bort'].bort_exclude == ('classifier',)
  assert pair['bort'].seed == 2
  assert pair['bort'].train_examples == 100
  assert pair['bort'].eval_examples == 0
  assert runs['mlp'][0]['bort'].epochs == 3
  assert runs['mlp'][0]['bort'].learning_rate == 2e-3
  assert str(protocol.run_directory('w', pair['bort'])) == (
      'w/mnist_invertible_cnn/seed2/bort_adamw'
  )


def test_protocol_configs_explicit_gamma():
  runs = protocol.protocol_configs(['mlp'], [0], gamma=0.5)
  assert runs['mlp'][0]['bort'].gamma == 0.5
  assert runs['mlp'][0]['baseline'].gamma == 0.0


@pytest.mark.parametrize(
    'architectures,seeds,gamma,match',
    [
        (['resnet'], [0], None, 'unknown architecture'),
        (['mlp'], [], None, 'at least one seed'),
        (['mlp'], [0], 0.0, 'gamma must be finite and positive'),
        (['mlp'], [0], float('nan'), 'gamma must be finite and positive'),
    ],
)
def test_protocol_configs_bad_input(architectures, seeds, gamma, match):
  with pytest.raises(ValueError, match=match):
    protocol.protocol_configs(architectures, seeds, gamma=gamma)


def test_confidence_over_seeds():
  entry = protocol.confidence([0.8, 0.9, 1.0])
  assert entry['mean'] == pytest.approx(0.9)
  # t_{0.975, 2} * s / sqrt(3) with s = 0.1.
  assert entry['ci95'] == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-4)
  assert entry['values'] == [0.8, 0.9, 1.0]
  assert protocol.confidence([0.5])['ci95'] is None
  missing = protocol.confidence([1.0, None])
  assert missing['mean'] is None and missing['values'] == [1.0, None]


def test_aggregate_keeps_structure_and_strings():
  per_seed = [
      {
          'layer': 'top',
          'r': 0.5,
          'by_l2': {'1': 0.2},
          'hit': None,
          'miss': None,
      },
      {'layer': 'top', 'r': 0.7, 'by_l2': {'1': 0.4}, 'hit': 2.0, 'miss': None},
  ]
  out = protocol.aggregate(per_seed)
  assert out['layer'] == 'top'
  assert out['r']['mean'] == pytest.approx(0.6)
  assert out['r']['n'] == 2
  assert out['by_l2']['1']['mean'] == pytest.approx(0.3)
  assert out['hit']['mean'] is None
  assert out['miss'] is None
  assert protocol.paired_ratio([1.0, 3.0], [2.0, 6.0])['mean'] == 0.5
  assert protocol.paired_difference([1.0, 3.0], [2.0, 6.0])['mean'] == -2.0


def test_check_finite_names_the_nan():
  protocol.check_finite({'a': [1.0, None], 'b': {'c': 'text'}})
  with pytest.raises(ValueError, match=r'b/c/1'):
    protocol.check_finite({'a': 1.0, 'b': {'c': [0.0, float('nan')]}})


def test_sanity_correlation_of_trained_vs_untrained():
  x = uniform(0, (4, 4, 4, 1))
  labels = jnp.array([0, 1, 2, 0])
  first, same, other = (
      mlp([16, 8, 3], seed=0),
      mlp([16, 8, 3], seed=0),
      mlp([16, 8, 3], seed=5),
  )
  maps = {
      name: explain.attribution_map(explain.vanilla_gradient(m, x, labels))
      for name, m in (('first', first), ('same', same), ('other', other))
  }
  assert measure.sanity_correlation(maps['first'], maps['same']) == (
      pytest.approx(1.0, abs=1e-6)
  )
  assert measure.sanity_correlation(maps['first'], maps['other']) < 0.9


def test_adversarial_budgets():
  assert measure.adversarial_budgets({1.0: 0.5, 2.0: 1.0}) == pytest.approx(1.8)
  assert measure.adversarial_budgets({1.0: 0.95, 2.0: 1.0}) == (
      pytest.approx(0.9 / 0.95)
  )
  assert measure.adversarial_budgets({1.0: 0.2, 2.0: 0.5}) is None


def test_representation_layers():
  model = make_lossless_cnn()
  assert measure.weighted_layers(model) == [0, 2]
  assert measure.representation_layers(model) == ['conv1_lrelu', 'down1_lrelu']


TINY = measure.MeasureConfig(
    num_reconstruction=4,
    num_inversion=2,
    inversion_steps=2,
    num_saliency=2,
    ig_steps=2,
    deletion_steps=2,
    num_adversarial=4,
    l2_budgets=(0.5, 8.0),
    transfer_budget=8.0,
    pgd_steps=2,
    num_figure_examples=2,
    sat_k=4,
    ssim_window=7,
)
NORM = experiment.Normalization((0.5,), (0.25,))


@pytest.fixture(scope='module')
def measured():
  """measure_model on the exactly invertible toy CNN, two 'seeds' x roles."""
  images = NORM.from_pixels(uniform(1, (4, 8, 8, 1)))
  labels = jnp.array([0, 1, 2, 3])
  means = np.asarray(uniform(2, (10, 8, 8, 1)))
  models = {'baseline': make_lossless_cnn(seed=1), 'bort': make_lossless_cnn()}
  untrained = make_lossless_cnn(seed=3)
  per_seed, arrays = {}, {}
  for seed in (0, 1):
    per_seed[seed] = {}
    for role, model in models.items():
      results, arrays[role] = measure.measure_model(
          model,
          untrained,
          images,
          labels,
          means,
          NORM,
          TINY,
          log=lambda _: None,
      )
      bonus = 0.005 if role == 'bort' else 0.0
      results['test_accuracy'] = 0.9 + 0.01 * seed + bonus
      results['adversarial']['transfer'] = {'to': 'other', 'success_rate': 0.5}
      per_seed[seed][role] = results
  arrays['inputs'] = np.asarray(NORM.to_pixels(images[:2]))
  for role in models:
    arrays[role].pop('adversarial')
  return per_seed, arrays


def test_measure_model_on_orthogonal_cnn(measured):
  per_seed, arrays = measured
  rec = per_seed[0]['bort']['reconstruction']
  assert rec['layers'] == ['conv1_lrelu', 'down1_lrelu']
  # Square orthogonal layers: the transposed weights invert them exactly.
  for method in ('transpose', 'pinv'):
    for layer in rec['layers']:
      assert rec['chain'][method][layer]['pearson_r'] == pytest.approx(
          1.0, abs=1e-4
      )
      assert rec['chain'][method][layer]['affine_mse'] < 1e-6
    for layer in ('conv1', 'down1'):
      assert rec['per_layer'][method][layer]['relative_mse'] < 1e-6
  sal = per_seed[0]['bort']['saliency']
  assert sal['sat'] == {'layer': 'down1_lrelu', 'k': 4, 'channels': 36}
  for method in ('sat', 'gradient', 'gradient_x_input', 'integrated_gradients'):
    assert -1.0 <= sal['methods'][method]['sanity_spearman'] <= 1.0
  adv = per_seed[0]['bort']['adversarial']
  assert set(adv['success_by_l2']) == {'0.5', '8'}
  assert arrays['bort']['reconstruction']['down1_lrelu'].shape == (2, 8, 8, 1)


def test_report_from_measurements(measured, tmp_path):
  per_seed, arrays = measured
  entry = {
      'runs': {
          s: {
              r: {
                  'optimizer': r,
                  'gamma': 0.0,
                  'epochs': 1,
                  'train_examples': 0,
                  'train_seconds': 1.0,
              }
              for r in ('baseline', 'bort')
          }
          for s in per_seed
      },
      'per_seed': per_seed,
      'summary': {
          r: protocol.aggregate([per_seed[s][r] for s in per_seed])
          for r in ('baseline', 'bort')
      },
      'comparisons': report.comparisons(per_seed),
  }
  gap = entry['comparisons']['accuracy_gap_points']
  assert gap['mean'] == pytest.approx(-0.5)
  assert gap['n'] == 2
  architectures = {'toy': entry}
  assert report.acceptance(architectures)['evaluated'] is False
  full = {
      'settings': {'models': ['toy'], 'seeds': [0, 1]},
      'runtime_seconds': {'total': 1.0},
      'notes': ['a note'],
      'architectures': architectures,
      'acceptance': report.acceptance(architectures),
  }
  written = report.write_report(full, {'toy': arrays}, str(tmp_path / 'r'))
  for key in (
      'json',
      'markdown',
      'toy/reconstruction_layers',
      'reconstruction_pearson',
      'adversarial_success',
      'saliency_sanity',
  ):
    with open(written[key], 'rb') as f:
      assert f.read(1), key
  markdown = (tmp_path / 'r' / 'report.md').read_text()
  assert '## 1. Reconstruction' in markdown and 'a note' in markdown
  assert 'with 2 seeds t = 12.71' in markdown
  assert 'k = 4 of 36 channels' in markdown
  loaded = json.loads((tmp_path / 'r' / 'report.json').read_text())
  assert loaded['architectures']['toy']['summary']['bort']['test_accuracy'][
      'mean'
  ] == pytest.approx(0.91)
  # A NaN anywhere: an error, and nothing written.
  per_seed[1]['bort']['reconstruction']['chain']['pinv']['conv1_lrelu'][
      'ssim'
  ] = float('nan')
  with pytest.raises(ValueError, match='NaN'):
    report.write_report(
        full | {'architectures': {'toy': {**entry, 'per_seed': per_seed}}},
        {'toy': arrays},
        str(tmp_path / 'n'),
    )
  assert not (tmp_path / 'n').exists()


def test_acceptance_criteria_from_summaries():
  def chain(r_base, r_bort):
    return {
        role: {
            'reconstruction': {
                'chain': {
                    'transpose': {
                        'down2_lrelu': {'pearson_r': {'mean': r, 'ci95': 0.01}}
                    }
                }
            }
        }
        for role, r in (('baseline', r_base), ('bort', r_bort))
    }

  def comp(gap, ratio):
    return {
        'accuracy_gap_points': {'mean': gap, 'ci95': 0.1},
        'reconstruction': {
            'transpose': {
                'down2_lrelu': {
                    'pearson_r_difference': {'mean': 0.5, 'ci95': 0.1},
                    'affine_mse_ratio': {'mean': ratio, 'ci95': 0.01},
                }
            }
        },
    }

  met = report.acceptance(
      {
          'bort_invertible_cnn': {
              'summary': chain(0.5, 0.95),
              'comparisons': comp(0.2, 0.1),
          }
      }
  )
  assert met['all_met'] and all(c['met'] for c in met['criteria'])
  missed = report.acceptance(
      {
          'bort_invertible_cnn': {
              'summary': chain(0.7, 0.95),
              'comparisons': comp(0.6, 0.4),
          }
      }
  )
  assert [c['met'] for c in missed['criteria']] == [False, True, False, False]
  assert not missed['all_met']
