"""BortInvertibleCNN: every layer square or overcomplete per patch, so that
the transposed weights invert it exactly once Bort has equalised the singular
values."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from testing import INVERTIBLE_CNN_LAYER_NAMES

import bort_jax
from bort_jax import explain

from bort_jax.models import (
    BORT_INVERTIBLE_CNN_CLASSIFIER_PATTERN,
    BortInvertibleCNN,
    InvertibleCNN,
)
from bort_jax.optimizer.masking import path_string

LAYER_NAMES = INVERTIBLE_CNN_LAYER_NAMES
CONVS = ('conv1', 'down1', 'conv2', 'down2')


def _numpy_initialised(build, seed=0):
  """``build()``'s model with LeCun-normal parameters drawn by numpy.

  Built abstractly, then filled: JAX's initialisers compile a sampler for
  every new shape, seconds each on a loaded CPU.
  """
  graphdef, state = nnx.split(nnx.eval_shape(build))
  rng = np.random.default_rng(seed)

  def draw(leaf):
    fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 1
    values = rng.standard_normal(leaf.shape) / np.sqrt(fan_in)
    return jnp.asarray(values, leaf.dtype)

  return nnx.merge(graphdef, jax.tree.map(draw, state))


@pytest.fixture(scope='module')
def small_preset():
  """The smallest preset on 8x8x1 inputs (stem 9 = conv1's fan-in).

  Tests that change its parameters work on an ``nnx.clone``.
  """
  return _numpy_initialised(
      lambda: BortInvertibleCNN(image_size=8, stem_channels=9, rngs=nnx.Rngs(0))
  )


def test_default_mnist_shapes(abstract_model, abstract_apply):
  model = abstract_model('bort_invertible_cnn', 10)
  assert isinstance(model, BortInvertibleCNN)
  assert model.layer_names == LAYER_NAMES
  assert model.patch_matrix_shapes() == {
      'conv1': (9, 16),
      'down1': (64, 64),
      'conv2': (64, 64),
      'down2': (256, 256),
      'classifier': (7 * 7 * 256, 10),
  }
  expected = {
      'conv1': (28, 28, 16),
      'down1': (14, 14, 64),
      'conv2': (14, 14, 64),
      'down2': (7, 7, 256),
      'flatten': (7 * 7 * 256,),
      'classifier': (10,),
  }
  shapes = explain.chain.layer_shapes(model, (28, 28, 1))
  for name, (_, out_shape) in zip(LAYER_NAMES, shapes):
    assert out_shape == expected[name.removesuffix('_lrelu')], name
  assert abstract_apply(model, (2, 28, 28, 1)).shape == (2, 10)
  assert all(model.get_layer(f'{c}_lrelu').slope == 0.5 for c in CONVS)


@pytest.mark.parametrize(
    'in_channels,stem,image_size', [(1, 9, 8), (3, 27, 12), (3, 32, 32)]
)
def test_every_conv_has_at_least_as_many_units_as_fan_in(
    in_channels, stem, image_size, abstract_model, abstract_apply
):
  model = abstract_model(
      'bort_invertible_cnn',
      5,
      in_channels=in_channels,
      stem_channels=stem,
      image_size=image_size,
  )
  shapes = model.patch_matrix_shapes()
  assert tuple(shapes) == (*CONVS, 'classifier')
  for name in CONVS:
    fan_in, units = shapes[name]
    assert units >= fan_in, (name, fan_in, units)
  # The strided convolutions are space-to-depth shaped: C -> 4C, square.
  assert shapes['down1'] == (4 * stem, 4 * stem)
  assert shapes['down2'] == (16 * stem, 16 * stem)
  shape = (2, image_size, image_size, in_channels)
  assert abstract_apply(model, shape).shape == (2, 5)


def test_forward_to_every_layer(small_preset):
  model = small_preset
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 1)))
  outputs = model.intermediates(x)
  assert tuple(outputs) == LAYER_NAMES
  for name in LAYER_NAMES:
    np.testing.assert_allclose(
        model.forward_to(x, name), outputs[name], rtol=1e-6, err_msg=name
    )
  assert outputs['down2_lrelu'].shape == (2, 2, 2, 144)
  np.testing.assert_allclose(model(x), outputs['classifier'], rtol=1e-6)


def test_classifier_pattern_selects_only_the_classifier(abstract_model):
  model = abstract_model('bort_invertible_cnn', 10)
  pattern = BORT_INVERTIBLE_CNN_CLASSIFIER_PATTERN
  assert model.kernel_pattern('classifier') == pattern
  mask = bort_jax.kernels_except(pattern)(nnx.state(model, nnx.Param))
  kernels = {
      path_string(path): selected
      for path, selected in jax.tree_util.tree_leaves_with_path(mask)
      if path_string(path).endswith('kernel')
  }
  assert kernels == {
      f'layers/{model.layer_index(name)}/kernel': name != 'classifier'
      for name in (*CONVS, 'classifier')
  }


def test_bad_configurations_raise(fast_rngs, small_preset):
  with pytest.raises(ValueError, match='below the fan-in of conv1'):
    BortInvertibleCNN(in_channels=3, stem_channels=16, rngs=fast_rngs())
  with pytest.raises(ValueError, match='divisible by 4'):
    BortInvertibleCNN(image_size=30, rngs=fast_rngs())
  with pytest.raises(ValueError, match='positive'):
    BortInvertibleCNN(leaky_relu_slope=0.0, rngs=fast_rngs())
  with pytest.raises(ValueError, match='has no kernel'):
    small_preset.kernel_pattern('flatten')


_reconstruct = jax.jit(explain.reconstruct, static_argnums=(2, 3))


def _set_tight_frames(model, rng, amplitudes):
  """Kernels with ``M M^T = a I_n`` (``M = kernel.reshape(-1, units)``)."""
  for name, amplitude in zip(CONVS, amplitudes):
    layer = model.get_layer(name)
    fan_in, units = model.patch_matrix_shapes()[name]
    q, _ = np.linalg.qr(rng.standard_normal((units, units)))
    matrix = np.sqrt(amplitude) * q[:fan_in]  # Orthonormal rows, scaled.
    layer.kernel[...] = jnp.asarray(matrix.reshape(layer.kernel.shape))
    layer.bias[...] = jnp.asarray(0.1 * rng.standard_normal(units))


def test_transposed_inverse_is_exact_at_bort_fixed_point(small_preset):
  """Per-patch M M^T = a I (each layer its own a): reconstruct returns x."""
  model = nnx.clone(small_preset)
  rng = np.random.default_rng(0)
  _set_tight_frames(model, rng, (0.5, 2.0, 1.0, 3.0))
  # Such kernels are a fixed point of Bort (its correction vanishes).
  for name, amplitude in zip(CONVS, (0.5, 2.0, 1.0, 3.0)):
    correction = bort_jax.bort_correction(
        model.get_layer(name).kernel[...], amplitude=amplitude
    )
    np.testing.assert_allclose(correction, 0.0, atol=1e-5, err_msg=name)
  x = jnp.asarray(rng.random((2, 8, 8, 1)), jnp.float32)
  # From the top conv representation: the whole chain of inverses.
  top = 'down2_lrelu'
  x_hat = _reconstruct(model, model.forward_to(x, top), top, (8, 8, 1))
  np.testing.assert_allclose(x_hat, x, atol=1e-4)


@functools.partial(jax.jit, static_argnums=1)
def _bort_fixed_point(kernel, num_steps):
  """Constraint-only Bort steps (l2-full, a = 1, lr * gamma = 1/2).

  Returns the kernel and its per-patch singular values.
  """
  units = kernel.shape[-1]
  # Start inside the basin: every singular value <= 1.
  kernel = kernel / jnp.linalg.norm(kernel.reshape(-1, units), ord=2)
  step = lambda _, k: k - 0.5 * bort_jax.bort_correction(k)
  kernel = jax.lax.fori_loop(0, num_steps, step, kernel)
  return kernel, jnp.linalg.svd(kernel.reshape(-1, units), compute_uv=False)


def _bort_steps(model, names, num_steps=40):
  for name in names:
    layer = model.get_layer(name)
    kernel, singular_values = _bort_fixed_point(layer.kernel[...], num_steps)
    np.testing.assert_allclose(singular_values, 1.0, atol=1e-4, err_msg=name)
    layer.kernel[...] = kernel


def test_bort_steps_make_the_preset_invertible_but_not_the_wide_cnn(
    small_preset,
):
  """Same Bort steps and inverse: exact for the preset, not with wide layers."""
  x = jnp.asarray(np.random.default_rng(1).random((2, 8, 8, 1)), jnp.float32)
  preset = nnx.clone(small_preset)
  wide = _numpy_initialised(
      lambda: InvertibleCNN(image_size=8, channels=(4, 8), rngs=nnx.Rngs(0)), 1
  )
  errors = {}
  for label, model in (('preset', preset), ('wide', wide)):
    _bort_steps(model, CONVS)
    top = 'down2_lrelu'
    x_hat = _reconstruct(model, model.forward_to(x, top), top, (8, 8, 1))
    errors[label] = float(jnp.linalg.norm(x_hat - x) / jnp.linalg.norm(x))
  assert errors['preset'] < 1e-4, errors
  # Wide layers only project: most of the input is lost however orthogonal.
  assert errors['wide'] > 0.3, errors
