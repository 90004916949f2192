"""Layer inverses and reconstruct: exactness, pseudo-inverse, shapes, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from bort_jax import explain
from bort_jax.models import InvertibleCNN, InvertibleVGG16, MLP, ResNet18
from bort_jax.models.layers import AvgPool, Flatten, LeakyReLU, MaxPool, NamedSequential, ReLU

from testing import conv, linear, normal, orthonormal

DN = ('NHWC', 'HWIO', 'NHWC')


def _conv(x, kernel, strides, padding, dilation=(1, 1)):
  return lax.conv_general_dilated(
      x,
      kernel,
      strides,
      padding,
      rhs_dilation=dilation,
      dimension_numbers=DN,
      precision='highest',
  )


# (kernel, strides, padding, in channels, out channels, size, dilation):
# out channels >= kh*kw*cin, i.e. orthonormal columns (tall or square).
TALL_CASES = [
    ((3, 3), (1, 1), ((1, 1), (1, 1)), 1, 9, 8, (1, 1)),
    ((3, 3), (1, 1), ((1, 1), (1, 1)), 1, 32, 8, (1, 1)),
    ((3, 3), (2, 2), ((1, 1), (1, 1)), 2, 18, 9, (1, 1)),
    ((3, 3), (2, 2), 'SAME', 1, 12, 8, (1, 1)),
    ((2, 2), (2, 2), 'VALID', 3, 12, 8, (1, 1)),
    ((2, 2), (3, 3), 'VALID', 1, 4, 8, (1, 1)),  # Some pixels in no patch.
    ((3, 2), (1, 2), ((2, 0), (1, 1)), 1, 7, 7, (1, 1)),
    ((3, 3), (1, 1), 'SAME', 1, 9, 8, (2, 2)),
]


def _operator_pinv(forward, x):
  """The pseudo-inverse of the linear map ``forward`` (flat -> flat), by numpy."""
  basis = jnp.eye(x.size, dtype=x.dtype)
  columns = jax.jit(jax.vmap(forward))(basis)  # Row i: forward(e_i).
  return jnp.asarray(
      np.linalg.pinv(np.asarray(columns, np.float64).T), jnp.float32
  )


@pytest.mark.parametrize(
    'kernel_size,strides,padding,cin,cout,size,dilation', TALL_CASES
)
def test_conv_inverse_is_the_pseudo_inverse_for_orthonormal_columns(
    kernel_size, strides, padding, cin, cout, size, dilation
):
  fan_in = kernel_size[0] * kernel_size[1] * cin
  kernel = orthonormal(0, fan_in, cout).reshape(*kernel_size, cin, cout)
  x = normal(1, (1, size, size, cin))
  forward = lambda v: _conv(
      v.reshape(x.shape), kernel, strides, padding, dilation
  ).ravel()
  y_shape = jax.eval_shape(
      lambda v: _conv(v, kernel, strides, padding, dilation), x
  ).shape
  y = normal(2, y_shape)
  expected = (_operator_pinv(forward, x) @ y.ravel()).reshape(x.shape)
  inverse = jax.jit(
      lambda y: explain.kernels.conv_inverse(
          y,
          kernel,
          input_shape=(size, size, cin),
          strides=strides,
          padding=padding,
          kernel_dilation=dilation,
      )
  )
  np.testing.assert_allclose(inverse(y), expected, atol=2e-5)


@pytest.mark.parametrize('cin,cout', [(1, 2), (3, 5), (4, 16)])
def test_conv_inverse_is_the_pseudo_inverse_for_orthogonal_rows_without_overlap(
    cin, cout
):
  """Wide filters (orthogonal rows, as Bort makes them), stride = kernel."""
  fan_in = 4 * cin
  kernel = 0.7 * orthonormal(3, fan_in, cout).reshape(2, 2, cin, cout)
  x = normal(4, (1, 6, 6, cin))
  forward = lambda v: _conv(v.reshape(x.shape), kernel, (2, 2), 'VALID').ravel()
  y = _conv(x, kernel, (2, 2), 'VALID') + 0.3
  bias = jnp.full((cout,), 0.3)
  expected = _operator_pinv(forward, x) @ (y - bias).ravel()
  got = explain.kernels.conv_inverse(
      y, kernel, bias, input_shape=(6, 6), strides=2
  )
  np.testing.assert_allclose(got.ravel(), expected, atol=2e-5)


@pytest.mark.parametrize('fan_in,units', [(8, 3), (5, 5), (3, 8)])
def test_dense_inverse_is_the_pseudo_inverse_of_scaled_orthogonal_kernels(
    fan_in, units
):
  kernel = 1.7 * orthonormal(5, fan_in, units)
  bias = jnp.arange(units, dtype=jnp.float32)
  y = normal(6, (4, units))
  got = explain.kernels.dense_inverse(y, kernel, bias)
  np.testing.assert_allclose(
      got, (y - bias) @ jnp.linalg.pinv(kernel), atol=1e-5
  )


def test_unit_scales_modes():
  w = jnp.array([[3.0, 0.0, 1.0], [0.0, 1.0, 1.0]])  # fan_in 2, units 3
  np.testing.assert_allclose(
      explain.kernels.unit_scales(w, 'row', eps=0), [9.0, 1.0, 2.0]
  )
  np.testing.assert_allclose(
      explain.kernels.unit_scales(w, 'frame', eps=0), [6.0] * 3
  )
  np.testing.assert_allclose(
      explain.kernels.unit_scales(w, 'auto', eps=0), [6.0] * 3
  )
  np.testing.assert_allclose(
      explain.kernels.unit_scales(w.T, 'auto', eps=0), [10.0, 2.0]
  )
  with pytest.raises(ValueError, match='unknown scaling'):
    explain.kernels.unit_scales(w, 'columns')


@pytest.mark.parametrize('slope', [0.01, 0.5, 1.0, 2.0])
def test_leaky_relu_inverse_is_exact(slope):
  x = normal(7, (5, 7))
  np.testing.assert_allclose(
      explain.kernels.leaky_relu_inverse(LeakyReLU(slope)(x), slope),
      x,
      rtol=1e-6,
      atol=1e-6,
  )


def test_relu_and_zero_slope_pass_through_and_negative_slope_fails():
  y = jnp.array([0.0, 2.0])
  np.testing.assert_array_equal(explain.kernels.relu_inverse(y), y)
  np.testing.assert_array_equal(explain.kernels.leaky_relu_inverse(y, 0.0), y)
  with pytest.raises(ValueError, match='negative slope'):
    explain.kernels.leaky_relu_inverse(y, -0.5)


@pytest.mark.parametrize('layer_type', [MaxPool, AvgPool])
@pytest.mark.parametrize(
    'window,strides,padding,size',
    [
        (2, None, 'VALID', 8),
        (3, 2, 'SAME', 7),
        (2, 1, ((1, 0), (0, 1)), 6),
        (3, 3, 'VALID', 10),
    ],
)
def test_pool_inverse_shapes_and_constants(
    layer_type, window, strides, padding, size
):
  layer = layer_type(window, strides, padding)
  x = jnp.full((2, size, size, 3), 1.5)
  y = layer(x)
  got = explain.layer_inverse(layer, y, x.shape[1:])
  assert got.shape == x.shape
  covered = (
      explain.kernels.pool_inverse(
          jnp.ones_like(y),
          input_shape=x.shape[1:],
          window=window,
          strides=strides,
          padding=padding,
      )
      > 0
  )
  # Every covered pixel of a constant image comes back (padding counts as
  # zeros in average pooling, so only check max pooling there).
  if layer_type is MaxPool or padding == 'VALID':
    np.testing.assert_allclose(got[covered], 1.5, rtol=1e-6)


def test_pool_inverse_is_nearest_neighbour_upsampling_without_overlap():
  y = normal(8, (2, 3, 4, 5))
  got = explain.kernels.pool_inverse(y, input_shape=(6, 8), window=2)
  np.testing.assert_allclose(
      got, jnp.repeat(jnp.repeat(y, 2, axis=1), 2, axis=2)
  )


def test_flatten_and_dropout_inverses():
  x = normal(9, (2, 3, 4, 5))
  np.testing.assert_array_equal(
      explain.layer_inverse(Flatten(), Flatten()(x), (3, 4, 5)), x
  )
  dropout = nnx.Dropout(0.5, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='Dropout layer in training mode'):
    explain.layer_inverse(dropout, x, x.shape[1:])
  dropout.eval()
  np.testing.assert_array_equal(
      explain.layer_inverse(dropout, x, x.shape[1:]), x
  )
  with pytest.raises(ValueError, match='cannot reshape'):
    explain.kernels.flatten_inverse(jnp.zeros((2, 7)), (2, 3))


LOSSLESS_LAYERS = ['conv1', 'conv1_lrelu', 'down1', 'down1_lrelu', 'flatten']


@pytest.mark.parametrize('layer_name', LOSSLESS_LAYERS)
def test_reconstruct_recovers_the_input_from_lossless_layers(
    lossless_cnn, images, layer_name
):
  z = lossless_cnn.forward_to(images, layer_name)
  got = explain.reconstruct(lossless_cnn, z, layer_name, images.shape[1:])
  np.testing.assert_allclose(got, images, atol=2e-5)


def test_reconstruct_from_a_lossy_classifier_keeps_its_logits():
  """A classifier with orthonormal units keeps a projection of its input:
  reconstructing from the logits gives an input with the same logits."""
  model = NamedSequential(
      [
          ('flatten', Flatten()),
          ('fc', linear(12, 12)),
          ('lrelu', LeakyReLU(0.3)),
          ('classifier', linear(12, 3)),
      ]
  )
  model.layers[1].kernel[...] = 2.0 * orthonormal(0, 12, 12)
  model.layers[3].kernel[...] = orthonormal(1, 12, 3)
  x = normal(2, (4, 2, 6, 1))
  logits = model(x)
  got = explain.reconstruct(model, logits, 'classifier', (2, 6, 1))
  np.testing.assert_allclose(model(got), logits, atol=1e-5)
  assert float(jnp.abs(got - x).max()) > 0.1  # The rest is lost.


def test_reconstruct_jits_and_reconstruct_all(lossless_cnn, images):
  recon = jax.jit(explain.reconstruct, static_argnums=(2, 3))
  z = lossless_cnn.forward_to(images, 'down1_lrelu')
  np.testing.assert_allclose(
      recon(lossless_cnn, z, 'down1_lrelu', (8, 8, 1)), images, atol=2e-5
  )
  every = explain.reconstruct_all(lossless_cnn, images, LOSSLESS_LAYERS)
  assert list(every) == LOSSLESS_LAYERS
  for x_hat in every.values():
    np.testing.assert_allclose(x_hat, images, atol=2e-5)


def small_invertible_vgg():
  """InvertibleVGG16 on 32x32 images with one 64-unit hidden classifier layer."""
  return InvertibleVGG16(
      num_classes=10, image_size=32, classifier_widths=(64,), rngs=nnx.Rngs(0)
  )


@pytest.mark.parametrize(
    'build,input_shape,layer',
    [
        (lambda: MLP(rngs=nnx.Rngs(0)), (28, 28, 1), 'fc1_relu'),
        (lambda: InvertibleCNN(rngs=nnx.Rngs(0)), (28, 28, 1), 'down2_lrelu'),
        (lambda: InvertibleCNN(rngs=nnx.Rngs(0)), (28, 28, 1), 'classifier'),
        (small_invertible_vgg, (32, 32, 3), 'down5'),
        (small_invertible_vgg, (32, 32, 3), 'fc6_dropout'),
    ],
)
def test_reconstruct_shapes_on_the_invertible_models(build, input_shape, layer):
  model = nnx.eval_shape(build)  # Abstract: shapes only, nothing computed.
  model.eval()

  def run(m, x):
    return explain.reconstruct(m, m.forward_to(x, layer), layer, input_shape)

  out = jax.eval_shape(
      run, model, jax.ShapeDtypeStruct((2, *input_shape), jnp.float32)
  )
  assert out.shape == (2, *input_shape)


@pytest.mark.parametrize(
    'build,layer',
    [(MLP, 'fc1_relu'), (InvertibleCNN, 'classifier')],  # the whole chain
)
def test_reconstruct_values_on_the_invertible_models(build, layer):
  """On initialised models the layer-by-layer inverse of the chain equals the
  primitive-by-primitive backtracking of the same layer given as a function,
  and it is a non-trivial image."""
  model = build(rngs=nnx.Rngs(0))
  model.eval()
  x = normal(0, (2, 28, 28, 1))
  z = model.forward_to(x, layer)
  by_name = explain.reconstruct(model, z, layer, (28, 28, 1))
  by_function = explain.reconstruct(
      model, z, lambda inputs: model.forward_to(inputs, layer), (28, 28, 1)
  )
  assert by_name.shape == x.shape
  assert bool(jnp.all(jnp.isfinite(by_name)))
  assert float(jnp.abs(by_name).max()) > 0
  assert float(jnp.abs(by_name[0] - by_name[1]).max()) > 0  # per example
  np.testing.assert_allclose(by_name, by_function, rtol=1e-5, atol=1e-6)


def test_least_squares_reconstruction_of_the_mlp_maps_back_to_the_layer():
  """fc1 (784 -> 256) is onto: the least-squares preimage of a ReLU output
  reproduces it exactly through the layer (the ReLU keeps zeros at zero)."""
  model = MLP(rngs=nnx.Rngs(0))
  model.eval()
  z = model.forward_to(normal(0, (2, 28, 28, 1)), 'fc1_relu')
  x_hat = explain.reconstruct(model, z, 'fc1_relu', (28, 28, 1), method='pinv')
  np.testing.assert_allclose(
      model.forward_to(x_hat, 'fc1_relu'), z, atol=1e-4 * float(z.max())
  )


def test_a_model_that_is_not_a_chain_needs_its_layer_as_a_function():
  resnet = nnx.eval_shape(lambda: ResNet18(num_classes=10, rngs=nnx.Rngs(0)))
  with pytest.raises(
      ValueError, match='Name the layer to explain by a function'
  ):
    explain.reconstruct(resnet, jnp.zeros((1, 10)), 'classifier', (32, 32, 3))


def test_layer_inverse_refuses_training_batchnorm_and_inverts_grouped_convs():
  with pytest.raises(ValueError, match='BatchNorm layer has no inverse'):
    explain.layer_inverse(
        nnx.BatchNorm(4, rngs=nnx.Rngs(0)), jnp.zeros((1, 4)), (4,)
    )
  # Two groups, each 2 channels x 2x2 patches = 8 inputs to 8 orthonormal
  # units (stride 2): the transposed weights invert it exactly.
  grouped = conv(4, 16, (2, 2), strides=2, feature_group_count=2)
  kernel = jnp.concatenate(
      [orthonormal(i, 8, 8).reshape(2, 2, 2, 8) for i in range(2)], axis=-1
  )
  grouped.kernel[...] = kernel
  x = normal(3, (2, 4, 4, 4))
  np.testing.assert_allclose(
      explain.layer_inverse(grouped, grouped(x), (4, 4, 4)), x, atol=1e-5
  )


@pytest.mark.parametrize(
    'representation_shape,layer,input_shape,match',
    [
        (
            (3, 8, 8, 9),
            'no_such_layer',
            (8, 8, 1),
            "unknown layer 'no_such_layer'",
        ),
        (
            (3, 8, 8, 8),
            'conv1',
            (8, 8, 1),
            r'representation has shape \(3, 8, 8, 8\)',
        ),
        ((8, 8, 9), 'conv1', (8, 8, 1), 'representation has shape'),
        (
            (3, 576),
            'flatten',
            (8, 8, 2),
            r'inputs of shape \(8, 8, 2\) do not fit',
        ),
        ((3, 8, 8, 9), 'conv1', (8, 8, 1, 1), 'do not fit'),
    ],
)
def test_reconstruct_bad_input_errors(
    lossless_cnn, representation_shape, layer, input_shape, match
):
  with pytest.raises(ValueError, match=match):
    explain.reconstruct(
        lossless_cnn, jnp.zeros(representation_shape), layer, input_shape
    )


def test_reconstruct_bad_scaling(lossless_cnn):
  with pytest.raises(ValueError, match='unknown scaling'):
    explain.reconstruct(
        lossless_cnn,
        jnp.zeros((1, 8, 8, 9)),
        'conv1',
        (8, 8, 1),
        scaling='diag',
    )


def test_conv_inverse_bad_shapes():
  kernel = jnp.zeros((3, 3, 2, 4))
  with pytest.raises(ValueError, match=r'expected outputs \[N, H, W, 4\]'):
    explain.kernels.conv_inverse(
        jnp.zeros((1, 5, 5, 3)), kernel, input_shape=(5, 5)
    )
  with pytest.raises(ValueError, match='has 3 channels but the kernel'):
    explain.kernels.conv_inverse(
        jnp.zeros((1, 3, 3, 4)), kernel, input_shape=(5, 5, 3)
    )
  with pytest.raises(ValueError, match='gives outputs of shape'):
    explain.kernels.conv_inverse(
        jnp.zeros((1, 4, 4, 4)), kernel, input_shape=(5, 5)
    )
  with pytest.raises(ValueError, match='CIRCULAR'):
    explain.kernels.conv_inverse(
        jnp.zeros((1, 5, 5, 4)), kernel, input_shape=(5, 5), padding='CIRCULAR'
    )


def test_named_sequential_relu_model_reconstructs_with_pass_through():
  model = NamedSequential(
      [('flatten', Flatten()), ('fc', linear(6, 6)), ('relu', ReLU())]
  )
  model.layers[1].kernel[...] = orthonormal(0, 6, 6)
  x = jnp.abs(normal(1, (2, 2, 3, 1)))
  z = model.forward_to(x, 'fc')
  np.testing.assert_allclose(
      explain.reconstruct(model, z, 'fc', (2, 3, 1)), x, atol=1e-5
  )
