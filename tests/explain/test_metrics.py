"""Metrics against hand-computed values, scipy and an independent SSIM."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from bort_jax import explain

from testing import normal, uniform


def _ssim_reference(x, y, data_range=1.0, size=11, sigma=1.5):
  """Direct (loop) SSIM of two single-channel 2D images."""
  offsets = np.arange(size) - (size - 1) / 2
  g = np.exp(-0.5 * (offsets / sigma) ** 2)
  window = np.outer(g, g) / np.outer(g, g).sum()
  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  values = []
  for i in range(x.shape[0] - size + 1):
    for j in range(x.shape[1] - size + 1):
      a, b = x[i : i + size, j : j + size], y[i : i + size, j : j + size]
      mu_a, mu_b = (window * a).sum(), (window * b).sum()
      var_a = (window * (a - mu_a) ** 2).sum()
      var_b = (window * (b - mu_b) ** 2).sum()
      cov = (window * (a - mu_a) * (b - mu_b)).sum()
      values.append(
          (2 * mu_a * mu_b + c1)
          * (2 * cov + c2)
          / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
      )
  return np.mean(values)


@pytest.mark.parametrize('noise', [0.05, 0.3])
def test_ssim_matches_a_direct_implementation(noise):
  rng = np.random.default_rng(0)
  x = rng.random((14, 13))
  y = np.clip(x + noise * rng.standard_normal(x.shape), 0, 1)
  got = explain.ssim(
      jnp.asarray(x[None, ..., None], jnp.float32),
      jnp.asarray(y[None, ..., None], jnp.float32),
  )
  np.testing.assert_allclose(got[0], _ssim_reference(x, y), rtol=1e-4)


def test_ssim_identity_constants_symmetry_and_channels():
  x = uniform(0, (2, 16, 16, 3))
  np.testing.assert_allclose(explain.ssim(x, x), [1.0, 1.0], rtol=1e-5)
  y = uniform(1, (2, 16, 16, 3))
  np.testing.assert_allclose(explain.ssim(x, y), explain.ssim(y, x), rtol=1e-5)
  assert float(explain.ssim(x, y).max()) < 0.2
  # Constant images a, b: SSIM = (2ab + C1) / (a^2 + b^2 + C1).
  a, b, c1 = 0.2, 0.7, 0.01**2
  got = explain.ssim(jnp.full((1, 12, 12, 1), a), jnp.full((1, 12, 12, 1), b))
  np.testing.assert_allclose(
      got, [(2 * a * b + c1) / (a * a + b * b + c1)], rtol=1e-5
  )


@pytest.mark.parametrize(
    'mse_value,data_range,expected',
    [
        (0.01, 1.0, 20.0),
        (1e-4, 1.0, 40.0),
        (1.0, 255.0, 20 * np.log10(255.0)),
        (0.25, 2.0, 12.041),
    ],
)
def test_psnr_of_a_known_mse(mse_value, data_range, expected):
  x = jnp.zeros((1, 4, 4, 1))
  y = x + np.sqrt(mse_value)
  np.testing.assert_allclose(explain.mse(x, y), [mse_value], rtol=1e-5)
  np.testing.assert_allclose(
      explain.psnr(x, y, data_range), [expected], rtol=1e-4
  )


@pytest.mark.parametrize(
    'curve,expected',
    [
        (np.linspace(1, 0, 11), 0.5),
        (np.ones(5), 1.0),
        (np.array([1.0, 0.0, 0.0, 0.0, 0.0]), 0.125),
        (np.linspace(0, 1, 3) ** 2, (0 + 0.25) / 4 + (0.25 + 1) / 4),
    ],
)
def test_auc_of_known_curves(curve, expected):
  np.testing.assert_allclose(
      explain.auc(jnp.asarray(curve, jnp.float32)), expected, rtol=1e-6
  )


def test_deletion_and_insertion_curves_on_a_hand_built_model():
  """Logit of class 0 = 10 * pixel (0, 0); the other pixels do not matter."""

  def predict(images):
    score = 10.0 * images[:, 0, 0, 0]
    return jnp.stack([score, jnp.zeros_like(score)], axis=-1)

  x = jnp.ones((1, 2, 2, 1))
  labels = jnp.array([0])
  good = jnp.array([[[1.0, 0.0], [0.0, 0.0]]])  # Pixel (0, 0) first.
  bad = jnp.array([[[0.0, 1.0], [1.0, 1.0]]])  # Pixel (0, 0) last.
  p_on, p_off = jax.nn.sigmoid(10.0), 0.5
  d_good = explain.deletion_curve(predict, x, good, labels, num_steps=4)
  d_bad = explain.deletion_curve(predict, x, bad, labels, num_steps=4)
  np.testing.assert_allclose(
      d_good[0], [p_on, p_off, p_off, p_off, p_off], rtol=1e-5
  )
  np.testing.assert_allclose(
      d_bad[0], [p_on, p_on, p_on, p_on, p_off], rtol=1e-5
  )
  assert explain.auc(d_good)[0] < explain.auc(d_bad)[0]
  i_good = explain.insertion_curve(predict, x, good, labels, num_steps=4)
  np.testing.assert_allclose(
      i_good[0], [p_off, p_on, p_on, p_on, p_on], rtol=1e-5
  )
  with pytest.raises(ValueError, match='saliency maps must have shape'):
    explain.deletion_curve(predict, x, good[:, :1], labels)


def test_mass_on_mask_and_cosine():
  s = jnp.array([[[1.0, 3.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
  mask = jnp.array([[[False, True], [True, False]]] * 2)
  np.testing.assert_allclose(explain.mass_on_mask(s, mask), [0.75, 0.0])
  np.testing.assert_allclose(
      explain.cosine_similarity(
          jnp.array([[1.0, 1.0], [1.0, 0.0]]),
          jnp.array([[-2.0, -2.0], [0.0, 3.0]]),
      ),
      [-1.0, 0.0],
      atol=1e-6,
  )


def test_attack_success_and_perturbation_norms():
  logits = jnp.array([[0.0, 5.0, 1.0], [3.0, 0.0, 1.0], [0.0, 0.0, 2.0]])
  labels, targets = jnp.array([1, 1, 2]), jnp.array([2, 0, 2])
  np.testing.assert_array_equal(
      explain.attack_success(logits, labels), [0.0, 1.0, 0.0]
  )
  np.testing.assert_array_equal(
      explain.attack_success(logits, labels, targets), [0.0, 1.0, 1.0]
  )
  norms = explain.perturbation_norms(
      jnp.array([[[3.0, 0.0]], [[-1.0, -1.0]]]), scale=2.0
  )
  np.testing.assert_allclose(norms['l2'], [6.0, np.sqrt(8.0)], rtol=1e-6)
  np.testing.assert_allclose(norms['linf'], [6.0, 2.0])
  np.testing.assert_allclose(norms['l0'], [1.0, 2.0])


def test_target_likeness_is_the_cosine_with_the_class_mean_difference():
  means = uniform(0, (4, 5, 5, 1))
  sources, targets = jnp.array([0, 3]), jnp.array([2, 1])
  delta = jnp.stack([means[2] - means[0], means[3] - means[1]])
  np.testing.assert_allclose(
      explain.target_likeness(delta, sources, targets, means),
      [1.0, -1.0],
      rtol=1e-5,
  )


def test_metric_errors():
  with pytest.raises(ValueError, match='shapes differ'):
    explain.mse(jnp.zeros((1, 3)), jnp.zeros((1, 4)))
  with pytest.raises(ValueError, match='smaller than the window'):
    explain.ssim(jnp.zeros((1, 8, 8, 1)), jnp.zeros((1, 8, 8, 1)))
  with pytest.raises(ValueError, match='shapes differ'):
    explain.pearson_r(jnp.zeros((1, 3)), jnp.zeros((1, 4)))
  with pytest.raises(ValueError, match='shapes differ'):
    explain.spearman_rank_correlation(jnp.zeros((1, 3)), jnp.zeros((2, 3)))
  with pytest.raises(ValueError, match='confidence'):
    explain.mean_confidence_interval([1.0, 2.0], confidence=95)
  with pytest.raises(ValueError, match='at least one value'):
    explain.mean_confidence_interval([])
  with pytest.raises(ValueError, match='at least two points'):
    explain.auc(jnp.ones((3, 1)))


def test_metrics_jit():
  x = uniform(0, (2, 12, 12, 1))
  y = x * 0.5 + uniform(1, (2, 12, 12, 1)) * 0.1
  names = (
      'ssim',
      'psnr',
      'mse',
      'pearson_r',
      'affine_fitted_mse',
      'spearman_rank_correlation',
  )
  fns = [getattr(explain, name) for name in names]
  jitted = jax.jit(lambda a, b: [f(a, b) for f in fns])(x, y)
  for name, f, got in zip(names, fns, jitted):
    np.testing.assert_allclose(got, f(x, y), rtol=1e-5, err_msg=name)


def test_pearson_r_known_values_and_scipy():
  x = normal(0, (3, 4, 5, 1))
  np.testing.assert_allclose(explain.pearson_r(x, 3 * x + 1), 1.0, atol=1e-6)
  np.testing.assert_allclose(explain.pearson_r(x, -x), -1.0, atol=1e-6)
  y = x + normal(1, x.shape)
  got = explain.pearson_r(x, y)
  expected = [
      stats.pearsonr(np.ravel(a), np.ravel(b)).statistic
      for a, b in zip(np.asarray(x), np.asarray(y))
  ]
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # Gain and offset of either argument change nothing (gain > 0).
  np.testing.assert_allclose(
      explain.pearson_r(0.2 * x - 7, 5 * y + 3), got, rtol=1e-4
  )
  # No variance, no correlation: 0 rather than nan.
  np.testing.assert_array_equal(
      explain.pearson_r(jnp.ones((1, 6)), jnp.arange(6.0)[None]), [0.0]
  )


def test_affine_fitted_mse():
  x = uniform(0, (3, 6, 6, 1))
  # Any gain and offset of x is fitted away.
  np.testing.assert_allclose(
      explain.affine_fitted_mse(-2.5 * x + 0.7, x), 0.0, atol=1e-6
  )
  # When the least-squares fit is the identity (residual of zero mean and
  # orthogonal to x_hat) it is the plain MSE.
  x_hat = np.asarray(normal(1, (3, 36)), np.float64)
  residual = np.asarray(normal(2, (3, 36)), np.float64)
  for h, e in zip(x_hat, residual):
    e -= e.mean()
    hc = h - h.mean()
    e -= (e @ hc) / (hc @ hc) * hc
  target = x_hat + residual
  np.testing.assert_allclose(
      explain.affine_fitted_mse(jnp.asarray(x_hat), jnp.asarray(target)),
      explain.mse(jnp.asarray(x_hat), jnp.asarray(target)),
      rtol=1e-5,
  )
  # In general: var(x) (1 - r^2), never above the MSE nor var(x).
  x_hat, x = normal(3, (4, 50)), normal(4, (4, 50)) + normal(3, (4, 50))
  got = explain.affine_fitted_mse(x_hat, x)
  r = explain.pearson_r(x_hat, x)
  np.testing.assert_allclose(got, jnp.var(x, axis=1) * (1 - r**2), rtol=1e-4)
  assert bool(jnp.all(got <= explain.mse(x_hat, x)))
  # A constant x_hat explains nothing: var(x).
  np.testing.assert_allclose(
      explain.affine_fitted_mse(jnp.zeros_like(x), x),
      jnp.var(x, axis=1),
      rtol=1e-5,
  )


def test_spearman_rank_correlation():
  a = normal(0, (2, 7, 7))
  np.testing.assert_allclose(
      explain.spearman_rank_correlation(a, jnp.exp(3 * a) + 2), 1.0, atol=1e-6
  )
  np.testing.assert_allclose(
      explain.spearman_rank_correlation(a, -(a**3)), -1.0, atol=1e-6
  )
  # Ties take their average rank, as in scipy.
  rng = np.random.default_rng(0)
  ties_a = rng.integers(0, 4, (3, 40)).astype(np.float32)
  ties_b = ties_a + rng.integers(0, 3, (3, 40)).astype(np.float32)
  expected = [stats.spearmanr(p, q).statistic for p, q in zip(ties_a, ties_b)]
  np.testing.assert_allclose(
      explain.spearman_rank_correlation(
          jnp.asarray(ties_a), jnp.asarray(ties_b)
      ),
      expected,
      rtol=1e-5,
  )
  # A map with every entry equal has no ranking: 0.
  np.testing.assert_array_equal(
      explain.spearman_rank_correlation(
          jnp.zeros((1, 5)), jnp.arange(5.0)[None]
      ),
      [0.0],
  )


def test_mean_confidence_interval_against_a_t_table():
  # t quantiles from a printed table: t_{0.975, 3} = 3.182446,
  # t_{0.95, 4} = 2.131847.
  values = [1.0, 2.0, 3.0, 4.0]
  mean, half = explain.mean_confidence_interval(values)
  np.testing.assert_allclose(mean, 2.5)
  np.testing.assert_allclose(half, 3.182446 * np.sqrt(5 / 3) / 2, rtol=1e-6)
  values = [0.9, 0.8, 1.1, 1.0, 0.7]  # mean 0.9, sample variance 0.025
  mean, half = explain.mean_confidence_interval(values, confidence=0.9)
  np.testing.assert_allclose(mean, 0.9)
  np.testing.assert_allclose(half, 2.131847 * np.sqrt(0.025 / 5), rtol=1e-6)
  # Over the seed axis of a [seeds, metrics] table.
  table = np.array([[1.0, 10.0], [2.0, 10.0], [3.0, 10.0], [4.0, 10.0]])
  mean, half = explain.mean_confidence_interval(table)
  np.testing.assert_allclose(mean, [2.5, 10.0])
  np.testing.assert_allclose(
      half, [3.182446 * np.sqrt(5 / 3) / 2, 0.0], rtol=1e-6
  )
  # One seed: no interval.
  mean, half = explain.mean_confidence_interval([0.3])
  assert float(mean) == 0.3 and np.isnan(half)


def test_ssim_decreases_with_noise_and_psnr_is_10_log10_of_inverse_mse():
  x = uniform(0, (2, 16, 16, 1))
  np.testing.assert_allclose(explain.ssim(x, x), 1.0, rtol=1e-6)
  noisy = [
      jnp.clip(x + sigma * normal(1, x.shape), 0, 1)
      for sigma in (0.02, 0.1, 0.3)
  ]
  values = np.stack([explain.ssim(x, y) for y in noisy])
  assert np.all(np.diff(values, axis=0) < 0), values
  for y in noisy:
    np.testing.assert_allclose(
        explain.psnr(x, y), 10 * np.log10(1 / explain.mse(x, y)), rtol=1e-5
    )
    np.testing.assert_allclose(
        explain.psnr(2 * x, 2 * y, data_range=2.0),
        explain.psnr(x, y),
        rtol=1e-5,
    )
  assert np.isposinf(explain.psnr(x, x)).all()
