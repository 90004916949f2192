"""Hyperparameters of any float dtype, non-finite values, complex kernels,
malformed dimension numbers and masks, and the default batching."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import bort_jax
from bort_jax import BortDimensionNumbers
from bort_jax.optimizer import placement

GAMMA = 0.5


def bf16_params():
  keys = jax.random.split(jax.random.key(0), 2)
  return {
      'dense': {
          'kernel': (0.4 * jax.random.normal(keys[0], (6, 4))).astype(
              jnp.bfloat16
          ),
          'bias': jnp.zeros((4,), jnp.bfloat16),
      },
      'conv': {
          'kernel': (0.4 * jax.random.normal(keys[1], (3, 3, 2, 4))).astype(
              jnp.bfloat16
          )
      },
  }


# ------------------------------------------------- low-precision hyperparameters


@pytest.mark.parametrize(
    'factory',
    [bort_jax.bort_adamw, bort_jax.bort_sgd],
    ids=['bort_adamw', 'bort_sgd'],
)
@pytest.mark.parametrize('amplitude', [1.0, 'adaptive'])
def test_inject_hyperparams_on_a_bf16_model(factory, amplitude):
  params = bf16_params()
  # inject_hyperparams casts numeric hyperparameters to the params' dtype; in
  # bf16 Adam's b2 = 0.999 rounds to 1 and the bias correction divides by 0
  # (optax.adamw too), so Adam's betas stay static.
  static = ('b1', 'b2') if factory is bort_jax.bort_adamw else ()
  tx = optax.inject_hyperparams(factory, static_args=static)(
      1e-2, gamma=GAMMA, amplitude=amplitude
  )
  state = tx.init(params)
  assert (
      state.hyperparams['gamma'].dtype == jnp.bfloat16
  )  # what broke the check
  direct = factory(1e-2, gamma=GAMMA, amplitude=amplitude)
  grads = jax.tree.map(jnp.zeros_like, params)
  injected_updates, _ = jax.jit(tx.update)(grads, state, params)
  direct_updates, _ = jax.jit(direct.update)(grads, direct.init(params), params)
  for got, want in zip(
      jax.tree.leaves(injected_updates), jax.tree.leaves(direct_updates)
  ):
    assert got.dtype == jnp.bfloat16
    # gamma = 0.5 and lr = 1e-2 in bf16 vs Python floats: within a bf16 ulp.
    np.testing.assert_allclose(
        np.asarray(got, np.float32),
        np.asarray(want, np.float32),
        rtol=2**-7,
        atol=1e-6,
    )


@pytest.mark.parametrize(
    'dtype', [jnp.bfloat16, jnp.float16, jnp.float32, np.float64]
)
def test_concrete_hyperparameters_of_any_float_dtype(dtype):
  kernel = 0.4 * jax.random.normal(jax.random.key(1), (6, 4))
  params = {'dense': {'kernel': kernel}}
  gamma = (
      jnp.asarray(GAMMA, dtype)
      if dtype is not np.float64
      else np.float64(GAMMA)
  )
  amplitude = (
      jnp.asarray(2.0, dtype) if dtype is not np.float64 else np.float64(2.0)
  )
  tx = bort_jax.add_bort_correction(gamma, amplitude=amplitude)
  updates, _ = tx.update(
      jax.tree.map(jnp.zeros_like, params), tx.init(params), params
  )
  np.testing.assert_allclose(
      updates['dense']['kernel'],
      GAMMA * bort_jax.bort_correction(kernel, amplitude=2.0),
      rtol=1e-6,
      atol=1e-7,
  )


NON_FINITE = {
    'nan': math.nan,
    'inf': math.inf,
    'minus_inf': -math.inf,
    'np_float32_nan': np.float32('nan'),
    'bf16_inf': jnp.asarray(jnp.inf, jnp.bfloat16),
    'f16_nan': jnp.asarray(jnp.nan, jnp.float16),
}

CONSTRUCTORS = {
    'add_bort_correction': lambda **kw: bort_jax.add_bort_correction(
        **{'gamma': GAMMA, **kw}
    ),
    'bort_sgd': lambda **kw: bort_jax.bort_sgd(0.1, **{'gamma': GAMMA, **kw}),
    'bort_adamw': lambda **kw: bort_jax.bort_adamw(
        0.1, **{'gamma': GAMMA, **kw}
    ),
}


@pytest.mark.parametrize('value', sorted(NON_FINITE))
@pytest.mark.parametrize('constructor', sorted(CONSTRUCTORS))
@pytest.mark.parametrize('argument', ['gamma', 'amplitude'])
def test_non_finite_gamma_and_amplitude_fail_at_construction(
    argument, constructor, value
):
  with pytest.raises(ValueError, match=f'^{argument} must be finite'):
    CONSTRUCTORS[constructor](**{argument: NON_FINITE[value]})


@pytest.mark.parametrize('value', sorted(NON_FINITE))
def test_non_finite_amplitude_fails_in_bort_correction(value):
  with pytest.raises(ValueError, match='^amplitude must be finite'):
    bort_jax.bort_correction(jnp.ones((4, 3)), amplitude=NON_FINITE[value])


@pytest.mark.parametrize(
    'gamma', [jnp.asarray(1.0, jnp.complex64), True, jnp.ones(2)]
)
def test_gamma_must_be_a_real_scalar(gamma):
  with pytest.raises(ValueError, match='gamma must be a real scalar'):
    bort_jax.add_bort_correction(gamma)


# ------------------------------------------------------------- complex kernels

# Penalties whose gradients the l2 modes are, on M with output units in columns.
PENALTIES = {
    'l2-full': lambda m, a: 0.25
    * jnp.sum(jnp.abs(m.conj().T @ m - a * jnp.eye(m.shape[1])) ** 2),
    'l2-row': lambda m, a: 0.25
    * jnp.sum((jnp.sum(jnp.abs(m) ** 2, axis=0) - a) ** 2),
    'l2-col': lambda m, a: 0.25
    * jnp.sum((jnp.sum(jnp.abs(m) ** 2, axis=1) - a) ** 2),
}


def complex_kernel(shape, seed=3):
  real, imag = jax.random.normal(jax.random.key(seed), (2, *shape))
  return (0.4 * (real + 1j * imag)).astype(jnp.complex64)


@pytest.mark.parametrize('shape', [(6, 4), (3, 5)], ids=['tall', 'wide'])
@pytest.mark.parametrize('mode', sorted(PENALTIES))
def test_complex_correction_is_the_hermitian_gradient(mode, shape):
  kernel = complex_kernel(shape)
  # For a real penalty of a complex argument jax.grad returns the conjugate
  # of the steepest-ascent direction.
  expected = jnp.conj(jax.grad(PENALTIES[mode])(kernel, 0.7))
  got = bort_jax.bort_correction(kernel, amplitude=0.7, mode=mode)
  assert got.dtype == jnp.complex64
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  if mode == 'l2-full':  # the plain transpose gives something else
    plain = kernel @ (kernel.T @ kernel) - 0.7 * kernel
    assert not np.allclose(got, plain, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize('mode', sorted(PENALTIES))
def test_real_kernels_match_the_same_penalties(mode):
  kernel = 0.4 * jax.random.normal(jax.random.key(4), (6, 4))
  np.testing.assert_allclose(
      bort_jax.bort_correction(kernel, amplitude=0.7, mode=mode),
      jax.grad(PENALTIES[mode])(kernel, 0.7),
      rtol=1e-5,
      atol=1e-6,
  )


def complex_params():
  return {
      'dense': {'kernel': complex_kernel((6, 4))},
      'real': {'kernel': 0.4 * jax.random.normal(jax.random.key(5), (6, 4))},
  }


def test_default_mask_leaves_complex_kernels_out():
  params = complex_params()
  assert bort_jax.default_mask(params) == {
      'dense': {'kernel': False},
      'real': {'kernel': True},
  }


@pytest.mark.parametrize('mask_kind', ['pytree', 'callable'])
def test_complex_kernel_selected_by_a_mask_is_corrected(mask_kind):
  params = complex_params()
  mask = {'dense': {'kernel': True}, 'real': {'kernel': True}}
  tx = bort_jax.add_bort_correction(
      GAMMA, mask=mask if mask_kind == 'pytree' else (lambda p: mask)
  )
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = jax.jit(tx.update)(zeros, tx.init(params), params)
  assert updates['dense']['kernel'].dtype == jnp.complex64
  np.testing.assert_allclose(
      updates['dense']['kernel'],
      GAMMA * bort_jax.bort_correction(params['dense']['kernel']),
      rtol=1e-6,
      atol=1e-7,
  )
  assert float(jnp.max(jnp.abs(updates['dense']['kernel']))) > 0


@pytest.mark.parametrize(
    'mode', [m for m in bort_jax.MODES if m.startswith('l1')]
)
def test_complex_kernel_under_an_l1_mode_fails_naming_it(mode):
  params = complex_params()
  tx = bort_jax.add_bort_correction(
      GAMMA, mode=mode, mask=lambda p: jax.tree.map(lambda _: True, p)
  )
  with pytest.raises(
      ValueError, match=re.escape('dense/kernel is complex (complex64)')
  ):
    tx.init(params)
  with pytest.raises(ValueError, match=f'mode {mode!r}.*real kernels only'):
    bort_jax.bort_correction(params['dense']['kernel'], mode=mode)


# --------------------------------------------- dimension numbers and masks


@pytest.mark.parametrize(
    'dims',
    [
        BortDimensionNumbers(output_axis=1.5),
        BortDimensionNumbers(output_axis=(0, 1.0)),
        BortDimensionNumbers(output_axis='1'),
        BortDimensionNumbers(batch_axis=0.0),
        BortDimensionNumbers(output_axis=True),
    ],
    ids=['float', 'float_in_tuple', 'string', 'float_batch', 'bool'],
)
def test_non_integer_axes_fail_clearly(dims):
  with pytest.raises(ValueError, match='axes must be integers'):
    bort_jax.add_bort_correction(GAMMA, dimension_numbers=dims)
  with pytest.raises(ValueError, match='axes must be integers'):
    bort_jax.bort_correction(jnp.ones((4, 3)), dimension_numbers=dims)


def test_numpy_integer_axes_are_accepted():
  kernel = 0.4 * jax.random.normal(jax.random.key(6), (4, 3))
  dims = BortDimensionNumbers(output_axis=np.int64(-1), batch_axis=())
  np.testing.assert_array_equal(
      bort_jax.bort_correction(kernel, dimension_numbers=dims),
      bort_jax.bort_correction(kernel),
  )


@pytest.mark.parametrize(
    'wrong',
    [
        {'dense': {'kernel': True}},
        {
            'dense': {'kernel': True, 'bias': False},
            'conv': {'kernel': True},
            'extra': True,
        },
        [True, False, True],
    ],
    ids=['missing_leaves', 'extra_leaf', 'list'],
)
def test_pytree_mask_of_the_wrong_structure_fails_at_init(wrong):
  params = bf16_params()
  tx = bort_jax.bort_adamw(1e-2, gamma=GAMMA, mask=wrong)
  with pytest.raises(
      ValueError, match='mask does not have the structure of the parameters'
  ):
    tx.init(params)


# ------------------------------------------------------------ default batching


def test_single_device_arrays_can_be_stacked():
  assert placement.placement_key(jnp.ones((4, 3))) == ('single',)
  assert placement.explicit_spec(jnp.ones((4, 3))) is None


@pytest.mark.parametrize(
    'factory',
    [
        lambda **kw: bort_jax.add_bort_correction(GAMMA, **kw),
        lambda **kw: bort_jax.bort_sgd(0.1, gamma=GAMMA, **kw),
        lambda **kw: bort_jax.bort_adamw(0.1, gamma=GAMMA, **kw),
    ],
    ids=['add_bort_correction', 'bort_sgd', 'bort_adamw'],
)
def test_kernels_of_equal_matrix_shape_are_batched_on_request(factory):
  keys = jax.random.split(jax.random.key(7), 2)
  params = {
      'a': {'kernel': jax.random.normal(keys[0], (6, 4))},
      'b': {'kernel': jax.random.normal(keys[1], (6, 4))},
  }
  zeros = jax.tree.map(jnp.zeros_like, params)
  jaxprs = {}
  for name, kwargs in (
      ('default', {}),
      ('batched', {'batch_kernels': True}),
      ('one_by_one', {'batch_kernels': False}),
  ):
    tx = factory(**kwargs)
    jaxprs[name] = str(
        jax.make_jaxpr(tx.update)(zeros, tx.init(params), params)
    )
  assert re.search(r'f32\[2,6,4\] = concatenate', jaxprs['batched'])
  assert 'concatenate' not in jaxprs['one_by_one']
  # The default batches on accelerators only; these tests run on the CPU.
  assert jax.default_backend() == 'cpu'
  assert 'concatenate' not in jaxprs['default']


# --------------------------------------------- the adaptive amplitude's drift


@pytest.mark.parametrize(
    'fan_in,out', [(3, 6), (6, 3)], ids=['overcomplete', 'complete']
)
def test_adaptive_amplitude_shrinks_only_overcomplete_matrices(fan_in, out):
  # Constraint-only steps M <- M - 0.25 Delta(M) with the adaptive amplitude,
  # as documented in add_bort_correction: for d > n the amplitude falls by at
  # least n/d per re-estimate once M M^T = a I_n; for d <= n it settles.
  m = jax.random.normal(jax.random.key(8), (fan_in, out)) / np.sqrt(fan_in)
  amplitude = lambda x: float(jnp.mean(jnp.linalg.norm(x, axis=0)) ** 2)
  amplitudes = []
  for _ in range(2):
    for _ in range(100):
      m = m - 0.25 * bort_jax.bort_correction(m, amplitude='adaptive')
    amplitudes.append(amplitude(m))
  if out > fan_in:  # still falling after 100 and 200 steps
    assert amplitudes[1] < 0.8 * amplitudes[0]
    assert amplitudes[0] < 0.1
  else:  # settled: M^T M = a I with a constant
    np.testing.assert_allclose(amplitudes[1], amplitudes[0], rtol=1e-5)
    np.testing.assert_allclose(m.T @ m, amplitudes[1] * jnp.eye(out), atol=1e-5)
