"""Optimisation-based inversion and total variation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bort_jax import explain

from testing import normal


def test_total_variation_hand_values():
  x = jnp.zeros((1, 3, 3, 1)).at[0, :, 2, 0].set(1.0)  # A vertical edge.
  # Pixels with both neighbours: the top-left 2x2 block; (i, 1) sees dx = 1.
  np.testing.assert_allclose(explain.total_variation(x), [2.0 / 9.0], rtol=1e-6)
  np.testing.assert_allclose(
      explain.total_variation(x, beta=1.0), [2.0 / 9.0], rtol=1e-3
  )
  with pytest.raises(ValueError, match='expects \\[N, H, W, C\\]'):
    explain.total_variation(jnp.zeros((2, 3)))


def test_inversion_matches_the_representation_and_approaches_the_input(
    lossless_cnn, images
):
  z = lossless_cnn.forward_to(images, 'down1_lrelu')
  invert = jax.jit(
      explain.invert_by_optimization,
      static_argnums=(2, 3),
      static_argnames=('num_steps', 'tv_weight', 'l2_weight'),
  )
  x_hat = invert(
      lossless_cnn,
      z,
      'down1_lrelu',
      (8, 8, 1),
      jax.random.key(0),
      num_steps=300,
      tv_weight=0.0,
      l2_weight=0.0,
  )
  start = 0.1 * normal(0, images.shape)
  error = lambda v: float(jnp.mean(jnp.square(v - images)))
  assert error(x_hat) < 0.05 * error(start)
  z_hat = lossless_cnn.forward_to(x_hat, 'down1_lrelu')
  assert float(jnp.sum((z_hat - z) ** 2) / jnp.sum(z**2)) < 1e-2


def test_inversion_clips_and_checks_shapes(lossless_cnn, images):
  z = lossless_cnn.forward_to(images, 'conv1')
  x_hat = explain.invert_by_optimization(
      lossless_cnn,
      z,
      'conv1',
      (8, 8, 1),
      jax.random.key(0),
      num_steps=3,
      clip_min=-0.2,
      clip_max=0.3,
  )
  assert float(x_hat.min()) >= -0.2 - 1e-6 and float(x_hat.max()) <= 0.3 + 1e-6
  with pytest.raises(ValueError, match='representation has shape'):
    explain.invert_by_optimization(
        lossless_cnn, z[..., :4], 'conv1', (8, 8, 1), jax.random.key(0)
    )
  with pytest.raises(ValueError, match="unknown layer 'conv3'"):
    explain.invert_by_optimization(
        lossless_cnn, z, 'conv3', (8, 8, 1), jax.random.key(0)
    )
