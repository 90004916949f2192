"""experiments/backtrack_architectures.py on tiny synthetic data.

A ResNet with two stages of one block (width 4) and a one-block ViT (4x4
patches, width 16), two steps of training per run, two seeds: every row of
the report is there and finite, and a NaN stops the run. Most of its time is
compilation (four train steps, eight backtracking maps), about a minute of
CPU.
"""

import math

import numpy as np
import pytest

from bort_jax.data import mnist_idx
from experiments import backtrack_architectures as experiment

pytestmark = pytest.mark.expensive

TINY = {
    'resnet': experiment.resnet(stage_sizes=(1, 1), width=4),
    'vit': experiment.vit(patch_size=4, embed_dim=16, depth=1, num_heads=1),
}
SETTINGS = experiment.Settings(
    seeds=(0, 1), batch_size=16, explain_images=4, pinv_images=2
)


def _synthetic(n, seed):
  rng = np.random.default_rng(seed)
  return mnist_idx.MnistArrays(
      rng.normal(size=(n, 28, 28, 1)).astype(np.float32),
      rng.integers(0, 10, n),
  )


@pytest.fixture(scope='module')
def report():
  return experiment.run(
      _synthetic(32, 0),
      _synthetic(8, 1),
      SETTINGS,
      TINY,
      log=lambda _: None,
  )


def test_every_architecture_optimizer_layer_and_method_is_reported(report):
  rows = {(r['architecture'], r['optimizer']): r for r in report['summary']}
  assert set(rows) == {(a, o) for a in TINY for o in experiment.OPTIMIZERS}
  for (arch, _), row in rows.items():
    assert {(b['layer'], b['method']) for b in row['backtracking']} == {
        (layer, method)
        for layer in TINY[arch].layers
        for method in experiment.METHODS
    }
  assert len(report['runs']) == len(rows) * len(SETTINGS.seeds)
  for run in report['runs']:
    assert run['gamma'] == (30.0 if run['optimizer'] == 'bort_adamw' else 0.0)
    assert run['steps'] == 2


def test_measures_are_finite_intervals_over_the_seeds(report):
  for row in report['summary']:
    intervals = [row['test_accuracy'], *row['orthogonality'].values()]
    for b in row['backtracking']:
      assert b['images'] == (
          SETTINGS.pinv_images
          if b['method'] == 'pinv'
          else SETTINGS.explain_images
      )
      intervals += [b[k] for k in experiment.METRICS]
      assert -1.0 <= b['pearson_r']['mean'] <= 1.0
      assert b['preimage_residual']['mean'] >= 0.0
    for interval in intervals:
      assert len(interval['per_seed']) == len(SETTINGS.seeds)
      assert math.isfinite(interval['mean'])
      assert math.isfinite(interval['ci95'])


def test_the_blank_reference_is_the_image_variance(report):
  images = _synthetic(8, 1).images
  for row in report['summary']:
    for b in row['backtracking']:
      variance = images[: b['images']].reshape(b['images'], -1).var(axis=-1)
      assert b['blank_affine_mse']['mean'] == pytest.approx(
          variance.mean(), rel=1e-5
      )


def test_least_squares_inverts_a_square_patch_embedding(report):
  # 4x4 patches -> 16 channels: a square convolution, full rank at init.
  for row in report['summary']:
    if row['architecture'] != 'vit':
      continue
    (pinv,) = [
        b
        for b in row['backtracking']
        if (b['layer'], b['method']) == ('patch_embedding', 'pinv')
    ]
    assert pinv['preimage_residual']['mean'] < 1e-3
    assert pinv['pearson_r']['mean'] > 0.999


def test_markdown_has_a_row_per_measure(report):
  text = experiment.markdown(report)
  for row in report['summary']:
    for b in row['backtracking']:
      assert f'| {b["layer"]} | {b["method"]} | {row["optimizer"]} |' in text


def test_a_non_finite_loss_stops_the_run():
  poisoned = _synthetic(32, 0)
  poisoned.images[0, 0, 0, 0] = np.nan
  with pytest.raises(FloatingPointError, match='not finite'):
    experiment.train(
        TINY['vit'], 'adamw', 0, poisoned, SETTINGS._replace(batch_size=32)
    )
