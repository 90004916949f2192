"""SAT on hand-built models, feature visualisation, gradient baselines, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bort_jax import explain
from bort_jax.models.layers import Flatten, LeakyReLU, NamedSequential

from testing import conv, linear, mlp, normal, orthonormal


def _identity_conv_model(channels=2):
  """One 1x1 convolution with the identity kernel and no bias: Z = x, g = id."""
  layer = conv(
      channels, channels, (1, 1), padding=((0, 0), (0, 0)), use_bias=False
  )
  layer.kernel[...] = jnp.eye(channels).reshape(1, 1, channels, channels)
  return NamedSequential([('conv', layer), ('flatten', Flatten())])


def _hand_built_input():
  x = jnp.zeros((1, 6, 6, 2))
  x = x.at[0, 2, 3, 0].set(5.0)  # Channel 0: maximum 5 inside.
  return x.at[0, 0, 0, 1].set(9.0)  # Channel 1: maximum 9 on the border.


def test_sat_on_a_hand_built_example():
  model, x = _identity_conv_model(), _hand_built_input()
  expected = jnp.zeros((1, 6, 6)).at[0, 2, 3].set(1.0)
  for k in (1, 2, None):  # Channel 1 is dropped (border): k does not matter.
    np.testing.assert_allclose(
        explain.backtracking_saliency(model, x, 'conv', k=k), expected
    )
  # Keeping border maxima: A = (5 m_0 + 9 m_1) / 9.
  got = explain.backtracking_saliency(model, x, 'conv', k=2, drop_border=False)
  expected = jnp.zeros((1, 6, 6)).at[0, 2, 3].set(5 / 9).at[0, 0, 0].set(1.0)
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  # With k=1 only the strongest channel (9, on the border) is kept.
  got = explain.backtracking_saliency(model, x, 'conv', k=1, drop_border=False)
  np.testing.assert_allclose(got, jnp.zeros((1, 6, 6)).at[0, 0, 0].set(1.0))


def test_sat_maps_lie_in_the_receptive_field_of_the_kept_positions():
  """A 2x2 stride-2 orthogonal conv: each position backtracks to its 2x2 patch."""
  layer = conv(1, 4, (2, 2), strides=2, padding=((0, 0), (0, 0)))
  filters = orthonormal(0, 4, 4)
  layer.kernel[...] = filters.reshape(2, 2, 1, 4)
  model = NamedSequential([('conv', layer), ('lrelu', LeakyReLU(0.5))])
  # The patch at output position (1, 2) is twice filter 0: channel 0 peaks
  # there (2.0); every other channel is 0 everywhere (maximum on the border).
  x = (
      jnp.zeros((1, 8, 8, 1))
      .at[0, 2:4, 4:6, 0]
      .set(2.0 * filters[:, 0].reshape(2, 2))
  )
  sal = explain.backtracking_saliency(model, x, 'lrelu', tau=0.5)
  assert float(sal.max()) == 1.0
  outside = sal.at[0, 2:4, 4:6].set(0.0)
  assert float(jnp.abs(outside).max()) == 0.0


def test_sat_batches_jits_and_is_in_unit_range(lossless_cnn, images):
  sat = jax.jit(
      explain.backtracking_saliency,
      static_argnums=2,
      static_argnames=('k', 'batch_size'),
  )
  maps = sat(lossless_cnn, images, 'down1_lrelu', k=5, batch_size=2)
  assert maps.shape == (3, 8, 8)
  assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0
  single = explain.backtracking_saliency(
      lossless_cnn, images[1:2], 'down1_lrelu', k=5
  )
  np.testing.assert_allclose(maps[1:2], single, atol=1e-6)


def test_resolve_k():
  assert explain.saliency.resolve_k(None, 64) == 64
  assert explain.saliency.resolve_k(None, 1024) == 256
  assert explain.saliency.resolve_k(64, 64) == 64
  for k in (0, 65):
    with pytest.raises(ValueError, match=f'k={k} is not in'):
      explain.saliency.resolve_k(k, 64)


def test_sat_errors():
  model, x = _identity_conv_model(), _hand_built_input()
  with pytest.raises(ValueError, match='k=3 is not in \\[1, 2\\].*2 channels'):
    explain.backtracking_saliency(model, x, 'conv', k=3)
  with pytest.raises(ValueError, match='needs a spatial feature map'):
    explain.backtracking_saliency(model, x, 'flatten')
  with pytest.raises(ValueError, match="unknown layer 'conv9'"):
    explain.backtracking_saliency(model, x, 'conv9')
  with pytest.raises(ValueError, match='do not fit'):
    explain.backtracking_saliency(model, jnp.zeros((1, 6, 6, 3)), 'conv')


def test_feature_visualization_channels_add_up_for_a_linear_backtracking_map():
  model = NamedSequential(
      [('conv', conv(1, 4, (2, 2), strides=2, padding=((0, 0), (0, 0))))]
  )
  x = normal(2, (2, 6, 6, 1))
  parts = sum(
      explain.feature_visualization(model, x, 'conv', c) for c in range(4)
  )
  z = model.forward_to(x, 'conv')
  whole = explain.reconstruct(
      model, z, 'conv', (6, 6, 1)
  ) - explain.reconstruct(model, jnp.zeros_like(z[:1]), 'conv', (6, 6, 1))
  np.testing.assert_allclose(parts, whole, atol=1e-5)
  per_example = explain.feature_visualization(
      model, x, 'conv', jnp.array([1, 3])
  )
  np.testing.assert_allclose(
      per_example[1],
      explain.feature_visualization(model, x, 'conv', 3)[1],
      atol=1e-6,
  )
  with pytest.raises(ValueError, match='channel 4 is out of range'):
    explain.feature_visualization(model, x, 'conv', 4)


@pytest.fixture(scope='module')
def small_mlp():
  return mlp((12, 16, 5), seed=3, activation=lambda: LeakyReLU(0.2))


def test_integrated_gradients_completeness(small_mlp):
  x = normal(4, (4, 12))
  labels = jnp.array([0, 1, 2, 4])
  baseline = -0.5
  ig = jax.jit(explain.integrated_gradients, static_argnames='num_steps')(
      small_mlp, x, labels, baseline=baseline, num_steps=256
  )
  logits, base_logits = small_mlp(x), small_mlp(jnp.full_like(x, baseline))
  expected = (
      jnp.take_along_axis(logits, labels[:, None], 1)
      - jnp.take_along_axis(base_logits, labels[:, None], 1)
  )[:, 0]
  np.testing.assert_allclose(ig.sum(axis=1), expected, rtol=1e-2, atol=1e-3)


def test_gradient_baselines_on_a_linear_model():
  model = linear(6, 3)
  x = normal(5, (2, 6))
  labels = jnp.array([2, 0])
  kernel = model.kernel[...]
  grads = explain.vanilla_gradient(model, x, labels)
  np.testing.assert_allclose(grads, kernel[:, labels].T, rtol=1e-6)
  np.testing.assert_allclose(
      explain.gradient_x_input(model, x, labels, baseline=1.0),
      (x - 1.0) * kernel[:, labels].T,
      rtol=1e-5,
  )
  # For a linear model integrated gradients equal gradient x input exactly.
  np.testing.assert_allclose(
      explain.integrated_gradients(model, x, labels, num_steps=2),
      explain.gradient_x_input(model, x, labels),
      rtol=1e-5,
  )
  with pytest.raises(ValueError, match='num_steps must be positive'):
    explain.integrated_gradients(model, x, labels, num_steps=0)
  np.testing.assert_allclose(
      explain.attribution_map(jnp.array([[[[-1.0, 2.0]]]])), [[[3.0]]]
  )
