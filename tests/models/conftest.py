"""Shared helpers for the model tests.

Big models (VGG-16, ResNet-50, DeiT-S) are mostly checked abstractly: built
with ``nnx.eval_shape`` (no parameter is allocated or initialised) and run
with ``jax.eval_shape`` (shapes and dtypes only). Real forward passes use
batch 2 and small images so the suite stays fast on two CPU cores.

A tiny ViT, ``vit_tiny_test``, is registered in the model catalogue for
these tests (:func:`bort_jax.models.register_model`), so that they build it
by name like the packaged models.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bort_jax import models
from bort_jax.models import VisionTransformer, create_model

#: Name of the test-only ViT in the model catalogue.
TINY_VIT = 'vit_tiny_test'


def vit_tiny_test(
    num_classes: int = 10, *, rngs: nnx.Rngs, **kwargs
) -> VisionTransformer:
  """A tiny ViT: 32x32 inputs, patch 4, width 64, 2 heads, 2 blocks."""
  config = dict(
      image_size=32,
      patch_size=4,
      embed_dim=64,
      depth=2,
      num_heads=2,
      mlp_ratio=4.0,
  )
  config.update(kwargs)
  return VisionTransformer(num_classes, rngs=rngs, **config)


@pytest.fixture(scope='session', autouse=True)
def tiny_vit_in_catalogue():
  """Registers :func:`vit_tiny_test` as ``'vit_tiny_test'`` for the session."""
  models.register_model(
      TINY_VIT, vit_tiny_test, input_kwargs=models.image_input
  )
  yield TINY_VIT
  models.unregister_model(TINY_VIT)


@functools.lru_cache(maxsize=None)
def _abstract_model(name, num_classes, **kwargs):
  return nnx.eval_shape(
      lambda: create_model(
          name, num_classes=num_classes, rngs=nnx.Rngs(0), **kwargs
      )
  )


@pytest.fixture(scope='session')
def abstract_model():
  """``abstract_model(name, num_classes, **kwargs)``: a shape-only model.

  Cached: treat the returned model as read-only.
  """
  return _abstract_model


def _abstract_apply(model, input_shape, dtype='float32', method='__call__'):
  """Shape/dtype of ``getattr(model, method)(x)`` without running it."""
  graphdef, state = nnx.split(model)

  def apply(state, x):
    return getattr(nnx.merge(graphdef, state), method)(x)

  return jax.eval_shape(apply, state, jax.ShapeDtypeStruct(input_shape, dtype))


@pytest.fixture(scope='session')
def abstract_apply():
  """``abstract_apply(model, input_shape, dtype='float32', method='__call__')``."""
  return _abstract_apply


def param_count(model) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.fixture(scope='session')
def count_params():
  """``count_params(model)``: number of scalars in the ``nnx.Param`` state."""
  return param_count


def _fast_rngs(seed: int = 0) -> nnx.Rngs:
  return nnx.Rngs(jax.random.key(seed, impl='rbg'))


@pytest.fixture(scope='session')
def fast_rngs():
  """``fast_rngs(seed=0)``: ``nnx.Rngs`` on the RBG generator.

  Initialising a parameter of a new shape compiles a sampler; with RBG keys
  that compiles several times faster on CPU than with the default threefry.
  """
  return _fast_rngs


def _random_images(shape, seed: int = 0):
  return jnp.asarray(
      np.random.default_rng(seed).normal(size=shape), jnp.float32
  )


@pytest.fixture(scope='session')
def random_images():
  """``random_images(shape, seed=0)``: standard-normal float32 NHWC images."""
  return _random_images
