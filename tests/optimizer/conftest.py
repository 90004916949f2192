"""Shared fixtures for the optimizer tests: tiny parameter trees, models, helpers.

Everything here is deliberately small (a handful of leaves, a few dozen
entries each) so that the whole optimizer suite compiles and runs in seconds on
two CPU cores.
"""

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

# Kernel paths of the models below: the leaves Bort must constrain by default.
NNX_KERNELS = frozenset({'conv/kernel', 'linear/kernel'})
LINEN_KERNELS = frozenset({'Conv_0/kernel', 'Dense_0/kernel'})


def path_str(path) -> str:
  """``'dense/kernel'`` for a key path, independent of the library's own naming."""
  names = [
      p
      for p in jax.tree_util.keystr(path, simple=True, separator='/').split('/')
      if p
  ]
  if names and names[-1] in ('value', 'raw_value'):
    names = names[:-1]
  return '/'.join(names)


def leaves_by_path(tree) -> dict:
  return {
      path_str(p): leaf
      for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def selected_paths(mask) -> frozenset:
  """Paths of the ``True`` leaves of a mask tree (plain, linen or nnx)."""
  return frozenset(
      p for p, leaf in leaves_by_path(mask).items() if leaf is True
  )


def assert_trees_close(actual, expected, *, rtol=1e-6, atol=1e-6, err_msg=''):
  actual_leaves, expected_leaves = leaves_by_path(actual), leaves_by_path(
      expected
  )
  assert actual_leaves.keys() == expected_leaves.keys(), err_msg
  for path, leaf in actual_leaves.items():
    np.testing.assert_allclose(
        np.asarray(leaf, np.float64),
        np.asarray(expected_leaves[path], np.float64),
        rtol=rtol,
        atol=atol,
        err_msg=f'{err_msg} leaf {path}',
    )


def random_like(tree, seed: int, scale: float = 1.0):
  """A tree of normal draws with the structure, shapes and dtypes of ``tree``."""
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return treedef.unflatten(
      [
          (scale * jax.random.normal(k, jnp.shape(x), jnp.float32)).astype(
              jnp.result_type(x)
          )
          for k, x in zip(keys, leaves)
      ]
  )


def make_dict_params(dtype=jnp.float32, seed: int = 0):
  """Dense, Conv and a second Dense of the same matrix shape, plus non-kernels."""
  shapes = {
      'dense': {'kernel': (6, 4), 'bias': (4,)},
      'conv': {'kernel': (3, 3, 2, 4)},
      'head': {
          'kernel': (6, 4)
      },  # same matrix shape as dense: corrected in one batch
      'norm': {'scale': (4,)},
  }
  leaves, treedef = jax.tree_util.tree_flatten(
      shapes, is_leaf=lambda x: isinstance(x, tuple)
  )
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return treedef.unflatten(
      [
          (0.4 * jax.random.normal(k, s)).astype(dtype)
          for k, s in zip(keys, leaves)
      ]
  )


def grads_sequence(params, num_steps: int = 3, seed: int = 100):
  """Distinct random gradients (scale 0.5) for ``num_steps`` steps."""
  return [
      random_like(params, seed + step, scale=0.5) for step in range(num_steps)
  ]


def run_steps(tx, params, grads_list, *, jit=True, apply=True):
  """Runs ``tx`` over ``grads_list``; returns (updates per step, final params, state)."""
  update = jax.jit(tx.update) if jit else tx.update
  state = tx.init(params)
  all_updates = []
  for grads in grads_list:
    updates, state = update(grads, state, params)
    updates = jax.block_until_ready(updates)
    all_updates.append(updates)
    if apply:
      params = jax.tree.map(
          lambda p, u: (p + u).astype(p.dtype), params, updates
      )
  return all_updates, params, state


class NnxNet(nnx.Module):
  """Linear + Conv + BatchNorm + Embed: every kind of leaf the mask must tell apart."""

  def __init__(self, rngs: nnx.Rngs):
    self.conv = nnx.Conv(2, 4, kernel_size=(3, 3), rngs=rngs)
    self.norm = nnx.BatchNorm(4, rngs=rngs)
    self.embed = nnx.Embed(5, 3, rngs=rngs)
    self.linear = nnx.Linear(4, 3, rngs=rngs)

  def __call__(self, images, ids):
    hidden = nnx.relu(self.norm(self.conv(images)))
    return self.linear(hidden.mean(axis=(1, 2))) + self.embed(ids)


class LinenNet(nn.Module):

  @nn.compact
  def __call__(self, images):
    hidden = nn.relu(nn.Conv(4, (3, 3))(images))
    hidden = nn.LayerNorm()(hidden.mean(axis=(1, 2)))
    return nn.Dense(3)(hidden)


class AttentionNet(nnx.Module):

  def __init__(self, rngs: nnx.Rngs):
    self.attention = nnx.MultiHeadAttention(
        num_heads=2,
        in_features=8,
        qkv_features=8,
        out_features=4,
        decode=False,
        rngs=rngs,
    )
    self.linear = nnx.Linear(4, 3, rngs=rngs)


@pytest.fixture
def dict_params():
  return make_dict_params()


@pytest.fixture
def nnx_net():
  return NnxNet(nnx.Rngs(0))


@pytest.fixture
def linen_params():
  variables = LinenNet().init(jax.random.key(0), jnp.ones((1, 5, 5, 2)))
  return variables['params']


@pytest.fixture
def attention_net():
  return AttentionNet(nnx.Rngs(0))


@pytest.fixture(scope='session')
def helpers():
  """The module-level helpers, for tests that need them as functions."""
  return types.SimpleNamespace(
      path_str=path_str,
      leaves_by_path=leaves_by_path,
      selected_paths=selected_paths,
      assert_trees_close=assert_trees_close,
      random_like=random_like,
      make_dict_params=make_dict_params,
      run_steps=run_steps,
      grads_sequence=grads_sequence,
      NnxNet=NnxNet,
      NNX_KERNELS=NNX_KERNELS,
      LINEN_KERNELS=LINEN_KERNELS,
  )
