"""Explaining a user's own Flax model: any nnx.Sequential, registered inverses.

Every model here is built inline as a user would in a notebook (plain
``nnx.Sequential``, ``nnx.Conv``, ``nnx.leaky_relu``), not taken from
``bort_jax.models``. Orthogonal kernels are set by hand (QR of a Gaussian
matrix, with numpy) rather than trained.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from testing import conv, normal, orthonormal
from flax import nnx

from bort_jax import explain

INPUT_SHAPE = (8, 8, 1)


def orthogonal_conv(in_features, out_features, kernel_size, seed, **kwargs):
  """An ``nnx.Conv`` with orthogonal ``[fan_in, units]`` matrix, bias != 0."""
  layer = conv(in_features, out_features, kernel_size, seed, **kwargs)
  shape = layer.kernel[...].shape
  fan_in = int(np.prod(shape[:-1]))
  layer.kernel[...] = orthonormal(seed, fan_in, out_features).reshape(shape)
  layer.bias[...] = 0.3 * normal(seed + 1, (out_features,))
  return layer


def random_conv(in_features, out_features, kernel_size, seed, **kwargs):
  """An ``nnx.Conv`` with a Gaussian kernel (not orthogonal) and a bias."""
  layer = conv(in_features, out_features, kernel_size, seed, **kwargs)
  layer.kernel[...] = normal(seed, layer.kernel[...].shape)
  layer.bias[...] = normal(seed + 1, (out_features,))
  return layer


def downsampling_chain(activation):
  """8x8x1 -> 2x2/2 conv (4 ch) -> act -> 2x2/2 conv (16 ch) -> act.

  Each kernel is square (fan-in 4 * C_in = units) and orthogonal, so the
  chain is a bijection when the activation is.
  """
  layers = [orthogonal_conv(1, 4, (2, 2), 0, strides=2, padding='VALID')]
  if activation is not None:
    layers.append(activation)
  layers.append(orthogonal_conv(4, 16, (2, 2), 2, strides=2, padding='VALID'))
  if activation is not None:
    layers.append(activation)
  return nnx.Sequential(*layers)


ACTIVATIONS = {
    'nnx_leaky_relu_partial': functools.partial(
        nnx.leaky_relu, negative_slope=0.5
    ),
    'jax_leaky_relu_partial': functools.partial(
        jax.nn.leaky_relu, negative_slope=0.5
    ),
    'nnx_leaky_relu_default_slope': nnx.leaky_relu,
    'no_activation': None,
}


@pytest.mark.parametrize(
    'activation', ACTIVATIONS.values(), ids=ACTIVATIONS.keys()
)
def test_reconstruct_inverts_an_orthogonal_sequential_exactly(activation):
  model = downsampling_chain(activation)
  x = normal(10, (3, *INPUT_SHAPE))
  for layer in range(len(model.layers)):
    z = explain.chain.forward_to(model, x, layer)
    got = explain.reconstruct(model, z, layer, INPUT_SHAPE)
    np.testing.assert_allclose(got, x, atol=1e-4)
  # Negative index, under jit with the model as an argument.
  recon = jax.jit(explain.reconstruct, static_argnums=(2, 3))
  np.testing.assert_allclose(
      recon(model, model(x), -1, INPUT_SHAPE), x, atol=1e-4
  )


def test_the_slope_of_a_leaky_relu_partial_is_read():
  model = nnx.Sequential(functools.partial(nnx.leaky_relu, negative_slope=0.25))
  y = jnp.array([[-1.0, 2.0]])
  np.testing.assert_allclose(
      explain.reconstruct(model, y, 0, (2,)), [[-4.0, 2.0]]
  )
  relu = nnx.Sequential(nnx.relu)
  np.testing.assert_array_equal(explain.reconstruct(relu, y, 0, (2,)), y)
  # A positional argument would take the input's place: refused, not misread.
  with pytest.raises(ValueError, match='binds positional arguments'):
    explain.layer_inverse(functools.partial(jax.nn.leaky_relu, 0.5), y, (2,))


class ChannelScale(nnx.Module):
  """A user's layer: a learnable per-channel scale, ``y = x * s``."""

  def __init__(self, channels, seed):
    self.scale = nnx.Param(1.0 + jnp.abs(normal(seed, (channels,))))

  def __call__(self, x):
    return x * self.scale[...]


def channel_scale_inverse(layer, y, input_shape, *, method, **options):
  del input_shape, method, options
  return y / layer.scale[...]


def batch_norm_with_running_stats(channels, seed):
  """An eval-mode BatchNorm with running statistics set by hand."""
  norm = nnx.BatchNorm(channels, rngs=nnx.Rngs(0))
  norm.mean[...] = normal(seed, (channels,))
  norm.var[...] = 0.5 + jnp.abs(normal(seed + 1, (channels,)))
  norm.scale[...] = 0.5 + jnp.abs(normal(seed + 2, (channels,)))
  norm.bias[...] = normal(seed + 3, (channels,))
  norm.eval()
  return norm


def test_registered_module_and_eval_batch_norm_are_inverted_exactly():
  explain.register_inverse(ChannelScale, channel_scale_inverse)
  lrelu = functools.partial(nnx.leaky_relu, negative_slope=0.5)
  model = nnx.Sequential(
      orthogonal_conv(1, 4, (2, 2), 0, strides=2, padding='VALID'),
      batch_norm_with_running_stats(4, 20),
      ChannelScale(4, 30),
      lrelu,
      orthogonal_conv(4, 16, (2, 2), 2, strides=2, padding='VALID'),
      batch_norm_with_running_stats(16, 40),
      lrelu,
  )
  x = normal(11, (2, *INPUT_SHAPE))
  for layer in range(len(model.layers)):
    z = explain.chain.forward_to(model, x, layer)
    np.testing.assert_allclose(
        explain.reconstruct(model, z, layer, INPUT_SHAPE), x, atol=1e-4
    )


def test_batch_norm_inverse_inverts_flax_batch_norm_on_any_axis():
  norm = nnx.BatchNorm(3, axis=1, rngs=nnx.Rngs(0))
  norm.mean[...] = jnp.array([1.0, -2.0, 0.5])
  norm.var[...] = jnp.array([4.0, 0.25, 1.0])
  norm.scale[...] = jnp.array([2.0, 0.5, -1.0])
  norm.bias[...] = jnp.array([0.1, 0.2, 0.3])
  norm.eval()
  x = normal(12, (2, 3, 5))
  got = explain.layer_inverse(norm, norm(x), (3, 5))
  np.testing.assert_allclose(got, x, atol=1e-5)


def test_pinv_recovers_the_input_of_a_random_same_convolution():
  model = nnx.Sequential(
      random_conv(1, 8, (3, 3), 50, strides=1, padding='SAME')
  )
  x = normal(13, (2, *INPUT_SHAPE))
  y = model(x)
  relative = lambda v: float(jnp.linalg.norm(v - x) / jnp.linalg.norm(x))
  pinv = jax.jit(
      functools.partial(explain.reconstruct, method='pinv'),
      static_argnums=(2, 3),
  )
  assert relative(pinv(model, y, 0, INPUT_SHAPE)) < 1e-3
  # The transposed-weight inverse assumes orthogonal filters: far off here.
  assert relative(explain.reconstruct(model, y, 0, INPUT_SHAPE)) > 0.1


def test_pinv_recovers_the_input_of_a_random_tall_dense_layer():
  layer = nnx.Linear(
      6, 10, kernel_init=nnx.initializers.zeros, rngs=nnx.Rngs(0)
  )
  layer.kernel[...] = normal(60, (6, 10))
  layer.bias[...] = normal(61, (10,))
  model = nnx.Sequential(
      layer, functools.partial(nnx.leaky_relu, negative_slope=0.2)
  )
  x = normal(14, (4, 6))
  got = explain.reconstruct(model, model(x), -1, (6,), method='pinv')
  np.testing.assert_allclose(got, x, atol=1e-4)
  np.testing.assert_allclose(
      explain.kernels.dense_pinv(layer(x), layer.kernel[...], layer.bias[...]),
      x,
      atol=1e-4,
  )


def test_pinv_and_transpose_agree_on_an_orthogonal_chain():
  model = downsampling_chain(
      functools.partial(nnx.leaky_relu, negative_slope=0.5)
  )
  x = normal(15, (2, *INPUT_SHAPE))
  np.testing.assert_allclose(
      explain.reconstruct(model, model(x), -1, INPUT_SHAPE, method='pinv'),
      x,
      atol=1e-4,
  )


def explained_cnn():
  """A user's classifier: 3x3 conv (9 ch) -> lrelu -> 2x2/2 conv (36 ch) ->
  lrelu -> flatten (a lambda) -> Dense (3 classes); every layer but the
  classifier is a bijection."""
  lrelu = functools.partial(nnx.leaky_relu, negative_slope=0.5)
  classifier = nnx.Linear(
      4 * 4 * 36, 3, kernel_init=nnx.initializers.zeros, rngs=nnx.Rngs(0)
  )
  classifier.kernel[...] = orthonormal(70, 4 * 4 * 36, 3)
  return nnx.Sequential(
      orthogonal_conv(1, 9, (3, 3), 0, padding='SAME'),
      lrelu,
      orthogonal_conv(9, 36, (2, 2), 2, strides=2, padding='VALID'),
      lrelu,
      lambda x: x.reshape(x.shape[0], -1),
      classifier,
  )


def test_every_procedure_runs_on_a_sequential_cnn():
  model = explained_cnn()
  x = normal(16, (2, *INPUT_SHAPE))

  every = explain.reconstruct_all(model, x)
  assert list(every) == list(range(6))
  for layer in range(5):  # All but the classifier are lossless.
    np.testing.assert_allclose(every[layer], x, atol=1e-4)

  saliency = explain.backtracking_saliency(model, x, 3, k=4)
  assert saliency.shape == (2, 8, 8)
  assert float(saliency.min()) >= 0.0 and float(saliency.max()) == 1.0

  visualize = jax.jit(explain.feature_visualization, static_argnums=(2, 3))
  channels = visualize(model, x, -3, 5)
  np.testing.assert_allclose(
      channels,
      explain.feature_visualization(model, x, 3, 5, method='pinv'),
      atol=1e-4,
  )
  assert channels.shape == x.shape and float(jnp.abs(channels).max()) > 0.0

  assert explain.classifier_input_layer(model) == 4
  targets = jnp.argmin(model(x), axis=-1)
  adversarial = explain.explainable_adversarial(model, x, targets, num_steps=2)
  np.testing.assert_array_equal(
      jnp.argmax(model(adversarial), axis=-1), targets
  )
  toward = explain.explainable_adversarial(
      model,
      x,
      targets,
      mode='example',
      layer_name=-3,
      target_examples=x[::-1],
      step_fraction=1.0,
      num_steps=1,
  )
  np.testing.assert_allclose(toward, x[::-1], atol=1e-4)

  z = explain.chain.forward_to(model, x, 2)
  inverted = explain.invert_by_optimization(
      model,
      z,
      2,
      INPUT_SHAPE,
      jax.random.key(0),
      num_steps=100,
      tv_weight=0.0,
      l2_weight=0.0,
  )
  start = 0.1 * jax.random.normal(jax.random.key(0), x.shape)
  mismatch = lambda v: float(
      jnp.sum(jnp.square(explain.chain.forward_to(model, v, 2) - z))
  )
  assert mismatch(inverted) < 0.1 * mismatch(start)


class NamedChain(nnx.Sequential):
  """A user's ``nnx.Sequential`` that names its layers."""

  def __init__(self, **named_layers):
    super().__init__(*named_layers.values())
    self.layer_names = tuple(named_layers)


def test_layers_by_name_nested_sequences_and_pooling_functions():
  lrelu = functools.partial(nnx.leaky_relu, negative_slope=0.5)
  model = NamedChain(
      block=nnx.Sequential(
          orthogonal_conv(1, 4, (2, 2), 0, strides=2, padding='VALID'), lrelu
      ),
      upsampled=functools.partial(
          nnx.avg_pool, window_shape=(2, 2), strides=(2, 2)
      ),
  )
  x = normal(17, (2, *INPUT_SHAPE))
  z = explain.chain.forward_to(model, x, 'block')
  np.testing.assert_allclose(
      explain.reconstruct(model, z, 'block', INPUT_SHAPE), x, atol=1e-4
  )
  pooled = model(x)
  got = explain.layer_inverse(model.layers[1], pooled, (4, 4, 4))
  np.testing.assert_allclose(
      got, jnp.repeat(jnp.repeat(pooled, 2, axis=1), 2, axis=2)
  )


RECORDED_SHAPES = []


class Recorder(nnx.Module):
  """Identity layer whose registered inverse records its concrete calls."""

  def __call__(self, x):
    return x


def recorder_inverse(layer, y, input_shape, **options):
  del layer, input_shape, options
  RECORDED_SHAPES.append(tuple(y.shape))  # Traced once, per example.
  return y


def cumulative(x):
  return jnp.cumsum(x, axis=-1)


def test_bad_layers_fail_at_once_naming_the_layer_and_register_inverse():
  explain.register_inverse(Recorder, recorder_inverse)
  conv = orthogonal_conv(1, 4, (2, 2), 0, strides=2, padding='VALID')
  for bad, what, primitive in [
      (nnx.LayerNorm(4, rngs=nnx.Rngs(0)), 'LayerNorm', 'mul'),
      (nnx.gelu, 'gelu', 'mul'),
      (cumulative, 'cumulative', 'cumsum'),
  ]:
    model = nnx.Sequential(conv, bad, Recorder())
    with pytest.raises(
        ValueError,
        match=rf"layer 1 \({what}[^)]*\) has no inverse: .*no 'transpose' "
        rf"rule for the primitive '{primitive}'.*method='pinv'.*"
        rf'register_inverse\({what}',
    ):
      explain.reconstruct(
          model, model(jnp.zeros((1, *INPUT_SHAPE))), 2, INPUT_SHAPE
      )
  assert RECORDED_SHAPES == []
  model = nnx.Sequential(conv, Recorder())  # The recorder does record.
  explain.reconstruct(model, jnp.zeros((1, 4, 4, 4)), 1, INPUT_SHAPE)
  assert RECORDED_SHAPES == [(1, 4, 4, 4)]


def test_bad_input_errors_name_the_problem():
  model = downsampling_chain(
      functools.partial(nnx.leaky_relu, negative_slope=0.5)
  )
  z = jnp.zeros((2, 2, 2, 16))
  cases = [
      (
          {'layer_name': 4},
          r'layer index 4 is out of range: Sequential has 4 layers',
      ),
      ({'layer_name': -5}, r'layer index -5 is out of range'),
      (
          {'layer_name': 'conv1'},
          r"unknown layer 'conv1': Sequential has no layer names",
      ),
      (
          {'representation': jnp.zeros((2, 2, 2, 8))},
          (
              r'representation has shape \(2, 2, 2, 8\).*'
              r'expected \(.N., 2, 2, 16\)'
          ),
      ),
      (
          {'method': 'svd'},
          r"unknown method 'svd'; valid methods: \['transpose', 'pinv'\]",
      ),
      ({'input_shape': (8, 8, 2)}, r'inputs of shape \(8, 8, 2\) do not fit'),
  ]
  for change, match in cases:
    arguments = {
        'model': model,
        'representation': z,
        'layer_name': -1,
        'input_shape': INPUT_SHAPE,
        **change,
    }
    with pytest.raises(ValueError, match=match):
      explain.reconstruct(**arguments)
  with pytest.raises(
      ValueError, match='neither an nnx.Sequential nor a NamedSequential'
  ):
    explain.reconstruct(ChannelScale(4, 0), z, 0, INPUT_SHAPE)
  with pytest.raises(ValueError, match='out of range'):
    explain.backtracking_saliency(model, jnp.zeros((1, *INPUT_SHAPE)), 9)
  with pytest.raises(ValueError, match='out of range'):
    explain.invert_by_optimization(model, z, 9, INPUT_SHAPE, jax.random.key(0))
  with pytest.raises(ValueError, match=r'is not a linear classifier'):
    explain.explainable_adversarial(
        model, jnp.zeros((1, *INPUT_SHAPE)), jnp.array([0])
    )


def test_training_mode_batch_norm_and_bad_registrations_are_refused():
  model = nnx.Sequential(nnx.BatchNorm(1, rngs=nnx.Rngs(0)))
  with pytest.raises(
      ValueError,
      match=r'BatchNorm layer has no inverse in training mode.*'
      r'model.eval\(\)',
  ):
    explain.reconstruct(model, jnp.zeros((2, 3, 1)), 0, (3, 1))
  with pytest.raises(ValueError, match=r'must accept \*\*options'):
    explain.register_inverse(ChannelScale, lambda layer, y, input_shape: y)
  with pytest.raises(ValueError, match='maxiter must be a positive int'):
    explain.reconstruct(
        nnx.Sequential(random_conv(1, 2, (3, 3), 0)),
        jnp.zeros((1, 8, 8, 2)),
        0,
        INPUT_SHAPE,
        method='pinv',
        maxiter=0,
    )
