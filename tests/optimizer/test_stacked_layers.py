"""Stacked (vmapped / scanned) layers, and callables under inject_hyperparams."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import bort_jax
from bort_jax import BortDimensionNumbers

GAMMA = 0.5
NUM_LAYERS = 3


class VmappedNet(nnx.Module):
  """Three Linear(4, 4) layers made by nnx.vmap, and a head."""

  def __init__(self, rngs: nnx.Rngs):

    @nnx.split_rngs(splits=NUM_LAYERS)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def create(rngs):
      return nnx.Linear(4, 4, rngs=rngs)

    self.layers = create(rngs)
    self.head = nnx.Linear(4, 2, rngs=rngs)


class Block(nn.Module):

  @nn.compact
  def __call__(self, x, _):
    return nn.tanh(nn.Dense(4)(x)), None


class ScannedNet(nn.Module):

  @nn.compact
  def __call__(self, x):
    x, _ = nn.scan(
        Block,
        variable_axes={'params': 0},
        split_rngs={'params': True},
        length=NUM_LAYERS,
    )(name='blocks')(x, None)
    return nn.Dense(2, name='head')(x)


def nnx_params():
  return nnx.as_pure(nnx.state(VmappedNet(nnx.Rngs(0)), nnx.Param))


def linen_params():
  return ScannedNet().init(jax.random.key(0), jnp.ones((1, 4)))['params']


STACKED = {
    # name: (params builder, pattern, path to the stacked kernel)
    'nnx_vmap': (nnx_params, '^layers/', ('layers', 'kernel')),
    'linen_scan': (linen_params, '^blocks/', ('blocks', 'Dense_0', 'kernel')),
}


def get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def correction_of(params, **kwargs):
  tx = bort_jax.add_bort_correction(GAMMA, **kwargs)
  zeros = jax.tree.map(jnp.zeros_like, params)
  return jax.jit(tx.update)(zeros, tx.init(params), params)[0]


@pytest.mark.parametrize('case', sorted(STACKED))
def test_stacked_kernels_are_corrected_layer_by_layer(case):
  build, pattern, path = STACKED[case]
  params = build()
  stacked = get(params, path)
  assert stacked.shape == (NUM_LAYERS, 4, 4)
  per_layer = correction_of(
      params, dimension_numbers=bort_jax.stacked_dimension_numbers(pattern)
  )
  expected = jnp.stack([GAMMA * bort_jax.bort_correction(k) for k in stacked])
  np.testing.assert_allclose(
      get(per_layer, path), expected, rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(
      get(per_layer, ('head', 'kernel')),
      GAMMA * bort_jax.bort_correction(params['head']['kernel']),
      rtol=1e-5,
      atol=1e-6,
  )
  # The default reading is one (3 * 4) x 4 matrix: a different correction.
  as_one = correction_of(params)
  np.testing.assert_allclose(
      get(as_one, path),
      GAMMA
      * bort_jax.bort_correction(stacked.reshape(-1, 4)).reshape(stacked.shape),
      rtol=1e-5,
      atol=1e-6,
  )
  assert not np.allclose(get(as_one, path), expected, rtol=1e-3, atol=1e-3)


def test_stacked_attention_kernels_keep_their_two_output_axes():
  params = {
      'layers': {'query': {'kernel': jnp.ones((2, 8, 2, 4))}},
      'head': {'kernel': jnp.ones((4, 2))},
  }
  dims = bort_jax.stacked_dimension_numbers('^layers/')(params)
  assert dims['layers']['query']['kernel'] == BortDimensionNumbers(
      output_axis=(2, 3), batch_axis=(0,)
  )
  assert dims['head']['kernel'] == BortDimensionNumbers()


def test_two_stacked_axes():
  kernel = 0.4 * jax.random.normal(jax.random.key(1), (2, 3, 5, 4))
  params = {'layers': {'kernel': kernel}}
  got = correction_of(
      params,
      dimension_numbers=bort_jax.stacked_dimension_numbers(
          '.', num_stacked_axes=2
      ),
  )
  expected = jax.vmap(jax.vmap(bort_jax.bort_correction))(kernel)
  np.testing.assert_allclose(
      got['layers']['kernel'], GAMMA * expected, rtol=1e-5, atol=1e-6
  )


@pytest.mark.parametrize(
    'patterns,kwargs,message',
    [
        ((), {}, 'needs at least one pattern'),
        (('(',), {}, 'invalid regular expression'),
        (
            ('^layers/',),
            {'num_stacked_axes': 0},
            'num_stacked_axes must be a positive integer',
        ),
    ],
)
def test_stacked_dimension_numbers_rejects_bad_arguments_at_once(
    patterns, kwargs, message
):
  with pytest.raises(ValueError, match=message):
    bort_jax.stacked_dimension_numbers(*patterns, **kwargs)


def test_stacked_dimension_numbers_errors_when_applied():
  params = {'layers': {'kernel': jnp.ones((3, 4))}}
  with pytest.raises(ValueError, match=r"\['\^blocks/'\] match no kernel"):
    bort_jax.stacked_dimension_numbers('^blocks/')(params)
  with pytest.raises(
      ValueError, match=r'layers/kernel of shape \(3, 4\) has 1 stacked axes'
  ):
    bort_jax.stacked_dimension_numbers('^layers/')(params)


# ----------------------------------------------- callables under inject_hyperparams


def test_inject_hyperparams_with_callables_named_in_static_args():
  params = nnx_params()
  mask = bort_jax.kernels_except('^head/')
  dims = bort_jax.stacked_dimension_numbers('^layers/')
  tx = optax.inject_hyperparams(
      bort_jax.bort_adamw, static_args=('mask', 'dimension_numbers')
  )(learning_rate=1e-2, gamma=GAMMA, mask=mask, dimension_numbers=dims)
  direct = bort_jax.bort_adamw(
      1e-2, gamma=GAMMA, mask=mask, dimension_numbers=dims
  )
  zeros = jax.tree.map(jnp.zeros_like, params)
  state = tx.init(params)
  assert set(state.hyperparams) >= {'learning_rate', 'gamma'}
  assert not {'mask', 'dimension_numbers'} & set(state.hyperparams)
  got = jax.jit(tx.update)(zeros, state, params)[0]
  want = jax.jit(direct.update)(zeros, direct.init(params), params)[0]
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize('argument', ['mask', 'dimension_numbers'])
def test_inject_hyperparams_calls_an_unnamed_callable_as_a_schedule(argument):
  # Without static_args the callable is taken for a schedule of the step
  # count: optax calls it with an integer, and the error says what to do.
  params = nnx_params()
  value = {
      'mask': bort_jax.kernels_except('^head/'),
      'dimension_numbers': bort_jax.stacked_dimension_numbers('^layers/'),
  }[argument]
  tx = optax.inject_hyperparams(bort_jax.bort_adamw)(
      learning_rate=1e-2, gamma=GAMMA, **{argument: value}
  )
  with pytest.raises(
      ValueError, match='instead of a parameter pytree.*static_args'
  ):
    tx.init(params)
