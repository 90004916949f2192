"""backtrack(f, x_like): any JAX function's primitives run backwards.

Models are built inline in three styles (a linen CNN, an NNX module with a
``__call__`` of its own and a residual block, a plain function of arrays),
each with stride-2 square kernels: orthogonal ones for ``'transpose'``,
random well-conditioned ones (singular values in [0.5, 2]) for ``'pinv'``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen, nnx
from jax import lax

from bort_jax import explain
from bort_jax.explain import kernels
from bort_jax.models import create_model
from bort_jax.models.resnet import BasicBlock
from bort_jax.models.vit import EncoderBlock

from testing import normal, orthonormal, uniform

NHWC = ('NHWC', 'HWIO', 'NHWC')
X_SHAPE = (2, 8, 8, 1)


def square_matrix(seed, n, orthogonal):
  """``[n, n]``: orthonormal, or with singular values spread over [0.5, 2]."""
  q = orthonormal(seed, n, n)
  if orthogonal:
    return q
  p = orthonormal(seed + 100, n, n)
  return (q * jnp.geomspace(0.5, 2.0, n)) @ p


def conv_kernel(seed, c_in, c_out, orthogonal):
  """A 2x2 kernel with as many units as fan-in (``c_out = 4 c_in``)."""
  return square_matrix(seed, 4 * c_in, orthogonal).reshape(2, 2, c_in, c_out)


class LinenCNN(linen.Module):

  @linen.compact
  def __call__(self, x):
    x = linen.Conv(4, (2, 2), strides=2, padding='VALID', name='down1')(x)
    x = linen.leaky_relu(x, 0.5)
    return linen.Conv(16, (2, 2), strides=2, padding='VALID', name='down2')(x)


def linen_model(orthogonal):
  model = LinenCNN()
  variables = model.init(jax.random.key(0), jnp.zeros(X_SHAPE))
  params = jax.tree.map(lambda p: p, variables['params'])
  params['down1']['kernel'] = conv_kernel(1, 1, 4, orthogonal)
  params['down2']['kernel'] = conv_kernel(2, 4, 16, orthogonal)
  params['down1']['bias'] = 0.1 * normal(3, (4,))
  return functools.partial(model.apply, {'params': params})


class ResidualNet(nnx.Module):
  """Down-sampling, a residual block ``h + F(h)``, down-sampling."""

  def __init__(self, orthogonal):
    rngs = nnx.Rngs(0)
    self.down1 = nnx.Conv(1, 4, (2, 2), strides=2, padding='VALID', rngs=rngs)
    self.inner = nnx.Conv(4, 4, (3, 3), rngs=rngs)
    self.down2 = nnx.Conv(4, 16, (2, 2), strides=2, padding='VALID', rngs=rngs)
    self.down1.kernel[...] = conv_kernel(4, 1, 4, orthogonal)
    self.down2.kernel[...] = conv_kernel(5, 4, 16, orthogonal)
    self.down1.bias[...] = 0.1 * normal(6, (4,))

  def __call__(self, x):
    h = jax.nn.leaky_relu(self.down1(x), 0.5)
    h = h + 0.1 * jnp.tanh(self.inner(h))  # F is a contraction.
    return self.down2(h)


def nnx_model(orthogonal):
  model = ResidualNet(orthogonal)
  return lambda x: model(x)


def plain_model(orthogonal):
  k = np.asarray(conv_kernel(7, 1, 4, orthogonal))  # NumPy parameters.
  w = np.asarray(square_matrix(8, 64, orthogonal))
  b = np.asarray(0.1 * normal(9, (64,)))

  def f(x):
    h = lax.conv_general_dilated(x, k, (2, 2), 'VALID', dimension_numbers=NHWC)
    h = jax.nn.leaky_relu(h, 0.2).reshape(x.shape[0], -1)
    return jnp.dot(h, w) + b

  return f


MODELS = {'linen': linen_model, 'nnx': nnx_model, 'plain': plain_model}


@pytest.mark.parametrize('method', ['transpose', 'pinv'])
@pytest.mark.parametrize('kind', sorted(MODELS))
def test_backtrack_returns_the_input_under_jit(kind, method):
  f = MODELS[kind](orthogonal=method == 'transpose')
  x = normal(0, X_SHAPE)
  g = jax.jit(explain.backtrack(f, x, method))
  np.testing.assert_allclose(g(f(x)), x, atol=1e-4)


@pytest.mark.parametrize('kind', sorted(MODELS))
def test_transpose_is_no_inverse_of_non_orthogonal_kernels(kind):
  f = MODELS[kind](orthogonal=False)
  x = normal(0, X_SHAPE)
  error = jnp.max(jnp.abs(explain.backtrack(f, x)(f(x)) - x))
  assert error > 1e-2


@pytest.mark.parametrize('method', ['transpose', 'pinv'])
@pytest.mark.parametrize('pool', [nnx.avg_pool, nnx.max_pool])
def test_pooling_returns_a_window_constant_image(pool, method):
  coarse = uniform(0, (2, 4, 4, 3))
  x = jnp.repeat(jnp.repeat(coarse, 2, axis=1), 2, axis=2)
  f = functools.partial(pool, window_shape=(2, 2), strides=(2, 2))
  g = jax.jit(explain.backtrack(f, x, method))
  np.testing.assert_allclose(g(f(x)), x, atol=1e-6)
  # Flax's default stride is 1 (overlapping windows), and is read so.
  f = functools.partial(pool, window_shape=(2, 2))
  assert f(x).shape == (2, 7, 7, 3)
  constant = jnp.full((1, 8, 8, 1), 0.7)
  g = explain.backtrack(f, constant, method)
  np.testing.assert_allclose(g(f(constant)), constant, atol=1e-6)


def test_g_is_vmappable_and_differentiable():
  f = plain_model(orthogonal=True)
  x = normal(0, X_SHAPE)
  g = explain.backtrack(f, x)
  zs = jnp.stack([f(x), f(2.0 * x)])
  np.testing.assert_allclose(
      jax.vmap(g)(zs), jnp.stack([x, 2.0 * x]), atol=1e-4
  )
  z, v = f(x), normal(1, X_SHAPE)
  grad = jax.grad(lambda z: jnp.vdot(g(z), v))(z)
  # g is piecewise affine: a step inside one piece changes <g, v> linearly.
  step = 1e-3 * normal(2, z.shape)
  expected = jnp.vdot(g(z + step), v) - jnp.vdot(g(z - step), v)
  np.testing.assert_allclose(2 * jnp.vdot(grad, step), expected, rtol=1e-2)


def cumulative(x):
  return jnp.cumsum(2.0 * x, axis=-1)


def test_a_primitive_without_a_rule_names_itself_its_line_and_the_ways_out():
  with pytest.raises(ValueError) as raised:
    explain.backtrack(cumulative, jnp.zeros((2, 3)))
  message = str(raised.value)
  assert "no 'transpose' rule for the primitive 'cumsum'" in message
  assert 'test_backtrack.py' in message and '(cumulative)' in message
  assert "rules={'cumsum': rule}" in message and 'custom_inverse' in message
  assert "method='pinv'" in message


def test_pinv_inverts_a_block_without_a_rule_by_gauss_newton():
  x = normal(0, (2, 3))
  g = explain.backtrack(cumulative, x, 'pinv')
  np.testing.assert_allclose(g(cumulative(x)), x, atol=1e-4)


def test_user_rules_and_custom_inverses_extend_the_map():
  def difference(eqn, y):
    del eqn
    return jnp.diff(y, axis=-1, prepend=0.0)

  x = normal(0, (2, 3))
  g = explain.backtrack(cumulative, x, rules={'cumsum': difference})
  np.testing.assert_allclose(g(cumulative(x)), x, atol=1e-5)
  cube = explain.custom_inverse(lambda v: v**3, jnp.cbrt)
  g = explain.backtrack(lambda v: jnp.tanh(cube(v) - 1.0), x)
  np.testing.assert_allclose(g(jnp.tanh(x**3 - 1.0)), x, atol=1e-4)


def test_bad_inputs_are_named():
  f = plain_model(orthogonal=True)
  with pytest.raises(ValueError, match="unknown method 'svd'"):
    explain.backtrack(f, jnp.zeros(X_SHAPE), 'svd')
  with pytest.raises(ValueError, match='residual_iterations must be'):
    explain.backtrack(f, jnp.zeros(X_SHAPE), residual_iterations=-1)
  with pytest.raises(ValueError, match='does not depend on its input'):
    explain.backtrack(lambda x: jnp.ones(3), jnp.zeros(3))
  g = explain.backtrack(f, jnp.zeros(X_SHAPE))
  with pytest.raises(
      ValueError, match=r'expects outputs of f of shape \(2, 64\)'
  ):
    g(jnp.zeros((2, 63)))


def transposed_chain(model, layer, z):
  """The per-layer map of the layer-chain API, composed from the kernels."""
  names = model.layer_names
  for name in reversed(names[: names.index(layer) + 1]):
    module = model.layers[names.index(name)]
    if isinstance(module, nnx.Conv):
      stride = np.broadcast_to(module.strides, 2)
      z = kernels.conv_inverse(
          z,
          module.kernel[...],
          module.bias[...],
          input_shape=(z.shape[1] * stride[0], z.shape[2] * stride[1]),
          strides=tuple(stride),
          padding=module.padding,
      )
    else:
      z = kernels.leaky_relu_inverse(z, module.slope)
  return z


def test_bort_invertible_cnn_backtrack_equals_the_layer_by_layer_map():
  model = create_model(
      'bort_invertible_cnn',
      num_classes=10,
      image_size=8,
      stem_channels=9,
      rngs=nnx.Rngs(0),
  )
  x = uniform(0, (2, 8, 8, 1))
  layer = 'down2_lrelu'
  z = model.forward_to(x, layer)
  g = jax.jit(explain.backtrack(lambda v: model.forward_to(v, layer), x))
  expected = transposed_chain(model, layer, z)
  np.testing.assert_allclose(g(z), expected, atol=1e-5)
  reconstruct = jax.jit(explain.reconstruct, static_argnums=(2, 3))
  np.testing.assert_allclose(
      reconstruct(model, z, layer, (8, 8, 1)), expected, atol=1e-5
  )


@pytest.mark.parametrize('method', ['transpose', 'pinv'])
def test_our_resnet_block_is_inverted_through_its_residual_addition(method):
  block = BasicBlock(4, 4, rngs=nnx.Rngs(0))
  block.bn2.scale[...] = jnp.full((4,), 0.05)  # F a contraction.
  block.eval()
  x = 1.0 + uniform(0, (2, 6, 6, 4))  # y + x > 0: the last ReLU keeps all.
  g = explain.backtrack(lambda v: block(v), x, method)
  np.testing.assert_allclose(g(block(x)), x, atol=1e-4)


@pytest.mark.parametrize('method', ['transpose', 'pinv'])
def test_our_vit_block_is_inverted_through_its_two_residual_additions(method):
  block = EncoderBlock(embed_dim=8, num_heads=2, rngs=nnx.Rngs(0))
  block.attention.out.kernel[...] *= 0.1  # Both branches contractions.
  block.mlp.fc2.kernel[...] *= 0.1
  block.eval()
  x = normal(0, (2, 5, 8))
  g = explain.backtrack(lambda v: block(v), x, method)
  np.testing.assert_allclose(g(block(x)), x, atol=1e-4)


def test_every_layer_of_the_vgg_models_has_a_backtracking_map():
  for name in ('invertible_vgg16', 'vgg16'):  # vgg16: max pooling, ReLU.
    model = nnx.eval_shape(
        lambda name=name: create_model(
            name,
            num_classes=10,
            image_size=32,
            classifier_widths=(16,),
            rngs=nnx.Rngs(0),
        )
    )
    model.eval()
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    for layer in model.layer_names:
      z = jax.eval_shape(
          lambda m, v, layer=layer: m.forward_to(v, layer), model, x
      )
      out = jax.eval_shape(
          lambda m, z, layer=layer: explain.reconstruct(
              m, z, layer, (32, 32, 3)
          ),
          model,
          z,
      )
      assert out.shape == x.shape, (name, layer)


class ResidualClassifier(nnx.Module):
  """A classifier with a ``__call__`` of its own (not a Sequential)."""

  def __init__(self):
    self.features = ResidualNet(orthogonal=True)
    self.head = nnx.Linear(64, 3, rngs=nnx.Rngs(1))

  def __call__(self, x):
    return self.head(self.features(x).reshape(x.shape[0], -1))


def as_chain(model):
  """The same layers as an ``nnx.Sequential``."""
  net = model.features
  return nnx.Sequential(
      net.down1,
      functools.partial(jax.nn.leaky_relu, negative_slope=0.5),
      lambda h: h + 0.1 * jnp.tanh(net.inner(h)),
      net.down2,
      lambda h: h.reshape(h.shape[0], -1),
      model.head,
  )


def test_every_procedure_gives_a_module_the_numbers_of_its_chain():
  model = ResidualClassifier()
  chain = as_chain(model)
  x = uniform(0, X_SHAPE)
  targets = jnp.array([1, 2])

  def features(v):
    return model.features(v)

  kernel, bias = model.head.kernel[...], model.head.bias[...]
  pairs = [
      (
          explain.backtracking_saliency(model, x, features, k=4),
          explain.backtracking_saliency(chain, x, 3, k=4),
      ),
      (
          explain.feature_visualization(model, x, features, 5),
          explain.feature_visualization(chain, x, 3, 5),
      ),
      (
          explain.invert_by_optimization(
              model,
              features(x),
              features,
              x.shape[1:],
              jax.random.key(0),
              num_steps=3,
          ),
          explain.invert_by_optimization(
              chain,
              features(x),
              3,
              x.shape[1:],
              jax.random.key(0),
              num_steps=3,
          ),
      ),
      (
          explain.explainable_adversarial(
              model,
              x,
              targets,
              layer_name=lambda v: features(v).reshape(len(v), -1),
              classifier=(kernel, bias),
              num_steps=1,
          ),
          explain.explainable_adversarial(chain, x, targets, num_steps=1),
      ),
  ]
  for got, expected in pairs:
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, atol=1e-5)
  with pytest.raises(ValueError, match=r'needs classifier=\(kernel, bias\)'):
    explain.explainable_adversarial(model, x, targets, layer_name=features)


def test_parameters_may_be_numpy_arrays():
  model = as_chain(ResidualClassifier())
  graphdef, state = nnx.split(model)
  numpy_model = nnx.merge(graphdef, jax.tree.map(np.asarray, state))
  x, targets = uniform(0, X_SHAPE), jnp.array([1, 2])
  np.testing.assert_allclose(
      explain.explainable_adversarial(numpy_model, x, targets, num_steps=1),
      explain.explainable_adversarial(model, x, targets, num_steps=1),
      atol=1e-6,
  )


def _stacked_orthonormal(count, n):
  return jnp.stack([orthonormal(10 + i, n, n) for i in range(count)])


# x is [3, 6]; each map is orthogonal, so both methods invert it exactly.
DOT_LAYOUTS = {
    'weights_first': lambda x: jnp.einsum('ij,bj->bi', orthonormal(0, 6, 6), x),
    'two_contracted_axes': lambda x: jnp.einsum(
        'bhd,hdo->bo', x.reshape(3, 2, 3), orthonormal(1, 6, 6).reshape(2, 3, 6)
    ),
    'two_unit_axes': lambda x: jnp.einsum(
        'bi,iho->bho', x, orthonormal(2, 6, 6).reshape(6, 2, 3)
    ),
    'batched_weights': lambda x: jnp.einsum(
        'bhi,hio->bho', x.reshape(3, 2, 3), _stacked_orthonormal(2, 3)
    ),
}


@pytest.mark.parametrize('method', ['transpose', 'pinv'])
@pytest.mark.parametrize('layout', sorted(DOT_LAYOUTS))
def test_dot_general_layouts(layout, method):
  f, x = DOT_LAYOUTS[layout], normal(0, (3, 6))
  np.testing.assert_allclose(
      explain.backtrack(f, x, method)(f(x)), x, atol=1e-5
  )
