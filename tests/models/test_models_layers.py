"""The layer types of the invertible models and the named layer sequence."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bort_jax.models import (
    SEQUENCE_LAYER_TYPES,
    AvgPool,
    Flatten,
    LeakyReLU,
    MaxPool,
    NamedSequential,
    ReLU,
)


def test_leaky_relu_and_its_inverse():
  x = jnp.array([-4.0, -1.0, 0.0, 2.0])
  y = LeakyReLU(0.5)(x)
  np.testing.assert_allclose(y, [-2.0, -0.5, 0.0, 2.0])
  inverse = jnp.maximum(y, 0) + jnp.minimum(y, 0) / 0.5
  np.testing.assert_allclose(inverse, x)
  assert LeakyReLU(0.5)(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16


def test_relu_flatten():
  np.testing.assert_allclose(ReLU()(jnp.array([-1.0, 3.0])), [0.0, 3.0])
  assert Flatten()(jnp.zeros((2, 3, 4, 5))).shape == (2, 60)


def test_pools():
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  np.testing.assert_allclose(MaxPool(2)(x)[0, :, :, 0], [[5, 7], [13, 15]])
  np.testing.assert_allclose(
      AvgPool(2)(x)[0, :, :, 0], [[2.5, 4.5], [10.5, 12.5]]
  )
  pool = MaxPool(3, 2, padding=((1, 1), (1, 1)))
  assert pool.window == (3, 3) and pool.strides == (2, 2)
  assert pool(jnp.zeros((1, 8, 8, 2))).shape == (1, 4, 4, 2)


def _tiny_sequence():
  rngs = nnx.Rngs(0)
  return NamedSequential(
      [
          ('flatten', Flatten()),
          ('fc1', nnx.Linear(12, 5, rngs=rngs)),
          ('fc1_lrelu', LeakyReLU(0.5)),
          ('classifier', nnx.Linear(5, 3, rngs=rngs)),
      ]
  )


def test_named_sequential_api():
  net = _tiny_sequence()
  x = jnp.linspace(-1, 1, 24).reshape(2, 2, 2, 3)
  assert net.layer_names == ('flatten', 'fc1', 'fc1_lrelu', 'classifier')
  assert len(net.layers) == 4
  assert net.get_layer('fc1') is net.layers[1]
  assert net.layer_index('classifier') == 3
  outputs = net.intermediates(x)
  assert list(outputs) == list(net.layer_names)
  np.testing.assert_allclose(outputs['classifier'], net(x))
  np.testing.assert_allclose(net.forward_to(x, 'fc1'), outputs['fc1'])
  assert list(net.intermediates(x, up_to='fc1')) == ['flatten', 'fc1']
  with pytest.raises(ValueError, match='fc1_lrelu'):
    net.forward_to(x, 'fc2')
  # Parameters live under ('layers', index, ...).
  assert set(nnx.state(net, nnx.Param)['layers']) == {1, 3}


def test_named_sequential_rejects_duplicates_and_foreign_layers():
  rngs = nnx.Rngs(0)
  with pytest.raises(ValueError, match='unique'):
    NamedSequential([('a', ReLU()), ('a', ReLU())])
  with pytest.raises(TypeError, match='BatchNorm'):
    NamedSequential([('bn', nnx.BatchNorm(3, rngs=rngs))])
  assert nnx.BatchNorm not in SEQUENCE_LAYER_TYPES
