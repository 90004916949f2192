"""Which leaves Bort constrains, how kernels are read, and the errors users see."""

import re

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
AMPLITUDES = [1.0, 'adaptive']


def select_all(params):
  return jax.tree.map(lambda _: True, params)


def correction_update(tx, params, updates=None):
  """One update of ``tx`` from zero (or given) updates: init, then update."""
  if updates is None:
    updates = jax.tree.map(jnp.zeros_like, params)
  new_updates, _ = tx.update(updates, tx.init(params), params)
  return new_updates


class LinenAttention(nn.Module):

  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(
        nn.MultiHeadDotProductAttention(
            num_heads=2, qkv_features=8, out_features=4
        )(x)
    )


# ------------------------------------------------------------ default mask


def _linen_attention_params():
  variables = LinenAttention().init(jax.random.key(0), jnp.ones((1, 3, 8)))
  return variables['params']


PARAM_TREES = {
    # name: (builder(request) -> params, expected kernel paths)
    'dict': (
        lambda r: r.getfixturevalue('dict_params'),
        {'dense/kernel', 'conv/kernel', 'head/kernel'},
    ),
    'linen': (
        lambda r: r.getfixturevalue('linen_params'),
        {'Conv_0/kernel', 'Dense_0/kernel'},
    ),
    'nnx_state_variables': (
        lambda r: nnx.state(r.getfixturevalue('nnx_net')),
        {'conv/kernel', 'linear/kernel'},
    ),
    'nnx_params_pure': (
        lambda r: nnx.as_pure(
            nnx.state(r.getfixturevalue('nnx_net'), nnx.Param)
        ),
        {'conv/kernel', 'linear/kernel'},
    ),
    'nnx_attention_variables': (
        lambda r: nnx.state(r.getfixturevalue('attention_net'), nnx.Param),
        {
            'attention/query/kernel',
            'attention/key/kernel',
            'attention/value/kernel',
            'attention/out/kernel',
            'linear/kernel',
        },
    ),
    'linen_attention': (
        lambda r: _linen_attention_params(),
        {
            f'MultiHeadDotProductAttention_0/{name}/kernel'
            for name in ('query', 'key', 'value', 'out')
        }
        | {'Dense_0/kernel'},
    ),
}


@pytest.mark.parametrize('tree_name', sorted(PARAM_TREES))
def test_default_mask_selects_exactly_the_kernels(tree_name, request, helpers):
  build, expected = PARAM_TREES[tree_name]
  params = build(request)
  mask = bort_jax.default_mask(params)
  assert jax.tree.structure(mask) == jax.tree.structure(params)
  mask_leaves = jax.tree.leaves(mask)
  assert all(type(leaf) is bool for leaf in mask_leaves), mask_leaves
  assert helpers.selected_paths(mask) == expected
  # Every other leaf is present and unselected (biases, scales, embeddings,
  # batch statistics, the 2-D attention biases).
  assert len(mask_leaves) > len(expected)


@pytest.mark.parametrize('tree_name', sorted(PARAM_TREES))
def test_default_correction_touches_exactly_the_default_mask(
    tree_name, request, helpers
):
  build, expected = PARAM_TREES[tree_name]
  params = build(request)
  updates = correction_update(bort_jax.add_bort_correction(GAMMA), params)
  changed = {
      path
      for path, leaf in helpers.leaves_by_path(updates).items()
      if np.any(leaf)
  }
  assert changed == expected


@pytest.mark.parametrize('tree_name', sorted(PARAM_TREES))
def test_kernels_except_removes_exactly_the_matching_kernels(
    tree_name, request, helpers
):
  build, expected = PARAM_TREES[tree_name]
  params = build(request)
  excluded = sorted(expected)[0]
  mask = bort_jax.kernels_except(f'^{re.escape(excluded)}$')(params)
  assert jax.tree.structure(mask) == jax.tree.structure(params)
  assert helpers.selected_paths(mask) == expected - {excluded}
  updates = correction_update(
      bort_jax.add_bort_correction(GAMMA, mask=mask), params
  )
  changed = {
      path
      for path, leaf in helpers.leaves_by_path(updates).items()
      if np.any(leaf)
  }
  assert changed == expected - {excluded}


def test_kernels_except_takes_several_patterns(dict_params, helpers):
  mask = bort_jax.kernels_except('^head/', 'conv')(dict_params)
  assert helpers.selected_paths(mask) == {'dense/kernel'}


@pytest.mark.parametrize(
    'patterns, message',
    [
        (('(',), "invalid regular expression '('"),
        ((3,), 'patterns must be strings'),
    ],
)
def test_kernels_except_rejects_bad_patterns_at_construction(patterns, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    bort_jax.kernels_except(*patterns)


def test_kernels_except_names_a_pattern_that_matches_no_kernel(dict_params):
  tx = bort_jax.bort_adamw(
      1e-3, gamma=GAMMA, mask=bort_jax.kernels_except('^classifier/')
  )
  with pytest.raises(
      ValueError, match=r"\['\^classifier/'\] match no kernel.*head/kernel"
  ):
    correction_update(tx, dict_params)


ATTENTION_TREES = ['nnx_attention_variables', 'linen_attention']


@pytest.mark.parametrize('tree_name', ATTENTION_TREES)
def test_default_dimension_numbers_of_attention(tree_name, request, helpers):
  build, expected = PARAM_TREES[tree_name]
  params = build(request)
  dims = bort_jax.default_dimension_numbers(params)
  flat = {
      helpers.path_str(path): leaf
      for path, leaf in jax.tree_util.tree_flatten_with_path(
          dims,
          is_leaf=lambda x: x is None or isinstance(x, BortDimensionNumbers),
      )[0]
  }
  assert flat.keys() == helpers.leaves_by_path(params).keys()
  for path, dn in flat.items():
    if path not in expected:
      assert dn is None, path
    elif path.split('/')[-2] in ('query', 'key', 'value'):
      assert dn == BortDimensionNumbers(output_axis=(1, 2)), path
    else:
      assert dn == BortDimensionNumbers(output_axis=(-1,)), path


@pytest.mark.parametrize('tree_name', ATTENTION_TREES)
def test_default_attention_reading_is_the_projection_matrix(
    tree_name, request, helpers
):
  params = PARAM_TREES[tree_name][0](request)
  updates = helpers.leaves_by_path(
      correction_update(bort_jax.add_bort_correction(GAMMA), params)
  )
  for path, kernel in helpers.leaves_by_path(params).items():
    kernel = jnp.asarray(kernel)
    if path.endswith(('query/kernel', 'key/kernel', 'value/kernel')):
      in_features, heads, head_dim = kernel.shape
      matrix = kernel.reshape(in_features, heads * head_dim)
    elif path.endswith('kernel'):
      matrix = kernel.reshape(-1, kernel.shape[-1])
    else:
      continue
    expected = GAMMA * bort_jax.bort_correction(matrix).reshape(kernel.shape)
    np.testing.assert_allclose(
        updates[path], expected, rtol=1e-5, atol=1e-6, err_msg=path
    )


@pytest.mark.parametrize('dims_kind', ['callable', 'pytree'])
def test_default_dimension_numbers_passed_explicitly_match_the_default(
    dims_kind, attention_net, helpers
):
  params = nnx.as_pure(nnx.state(attention_net, nnx.Param))
  dims = (
      bort_jax.default_dimension_numbers
      if dims_kind == 'callable'
      else bort_jax.default_dimension_numbers(params)
  )
  explicit = correction_update(
      bort_jax.add_bort_correction(GAMMA, dimension_numbers=dims), params
  )
  default = correction_update(bort_jax.add_bort_correction(GAMMA), params)
  helpers.assert_trees_close(explicit, default, rtol=0, atol=0)


# ------------------------------------------------------------ integer leaves


def int_params():
  """One float kernel; every other leaf is an integer (one of them 2-D, named kernel)."""
  return {
      'dense': {'kernel': 0.3 * jax.random.normal(jax.random.key(0), (5, 3))},
      'step': jnp.asarray(7, jnp.int32),
      'lookup': {'kernel': jnp.arange(12, dtype=jnp.int32).reshape(4, 3)},
      'counts': jnp.arange(3, dtype=jnp.int32),
  }


@pytest.mark.parametrize('mask_kind', ['callable', 'pytree', 'default'])
def test_integer_leaves_are_never_touched(mask_kind):
  params = int_params()
  mask = {
      'callable': select_all,
      'pytree': select_all(params),
      'default': None,
  }[mask_kind]
  tx = bort_jax.add_bort_correction(GAMMA, mask=mask)
  updates = {
      'dense': {'kernel': jnp.ones((5, 3))},
      'step': jnp.asarray(3, jnp.int32),
      'lookup': {'kernel': jnp.full((4, 3), 2, jnp.int32)},
      'counts': jnp.full((3,), 5, jnp.int32),
  }
  new = jax.jit(tx.update)(updates, tx.init(params), params)[0]
  for path in (('step',), ('lookup', 'kernel'), ('counts',)):
    got, want = new, updates
    for key in path:
      got, want = got[key], want[key]
    assert got.dtype == jnp.int32, path
    np.testing.assert_array_equal(got, want, err_msg=str(path))
  np.testing.assert_allclose(
      new['dense']['kernel'],
      1.0 + GAMMA * bort_jax.bort_correction(params['dense']['kernel']),
      rtol=1e-5,
      atol=1e-6,
  )
  report = bort_jax.orthogonality_report(params, mask=mask)
  assert set(report) == {'dense/kernel'}


# ------------------------------------------------------------- custom masks


def custom_params():
  """Weight matrices whose names do not end in 'kernel': the default selects none."""
  keys = jax.random.split(jax.random.key(1), 3)
  return {
      'w_in': 0.4 * jax.random.normal(keys[0], (6, 4)),
      'w_out': 0.4 * jax.random.normal(keys[1], (4, 3)),
      'b': 0.4 * jax.random.normal(keys[2], (3,)),
  }


CUSTOM_MASKS = {
    'pytree': {'w_in': True, 'w_out': False, 'b': False},
    'callable': lambda p: {'w_in': True, 'w_out': False, 'b': p['b'].ndim > 1},
}


@pytest.mark.parametrize('mask_kind', sorted(CUSTOM_MASKS))
def test_custom_mask_selects_exactly_its_leaves(mask_kind):
  params = custom_params()
  updates = jax.tree.map(jnp.ones_like, params)
  default = correction_update(
      bort_jax.add_bort_correction(GAMMA), params, updates
  )
  for name in params:  # nothing is called 'kernel': nothing changes
    np.testing.assert_array_equal(default[name], updates[name])

  masked = correction_update(
      bort_jax.add_bort_correction(GAMMA, mask=CUSTOM_MASKS[mask_kind]),
      params,
      updates,
  )
  np.testing.assert_allclose(
      masked['w_in'],
      1.0 + GAMMA * bort_jax.bort_correction(params['w_in']),
      rtol=1e-5,
      atol=1e-6,
  )
  assert np.abs(masked['w_in'] - 1.0).max() > 1e-3
  np.testing.assert_array_equal(masked['w_out'], updates['w_out'])
  np.testing.assert_array_equal(masked['b'], updates['b'])
  assert set(
      bort_jax.orthogonality_report(params, mask=CUSTOM_MASKS[mask_kind])
  ) == {'w_in'}


# ----------------------------------------------------- custom dimension numbers

STACKED = BortDimensionNumbers(output_axis=-1, batch_axis=0)


@pytest.mark.parametrize('amplitude', AMPLITUDES)
@pytest.mark.parametrize('mode', bort_jax.MODES)
def test_stacked_kernel_is_corrected_layer_by_layer(mode, amplitude):
  stacked = 0.4 * jax.random.normal(jax.random.key(2), (3, 6, 4))
  # Layers of different scale, so a shared (adaptive) amplitude would show.
  stacked = stacked * jnp.array([0.5, 1.0, 2.0])[:, None, None]
  got = bort_jax.bort_correction(
      stacked, mode=mode, amplitude=amplitude, dimension_numbers=STACKED
  )
  expected = jnp.stack(
      [
          bort_jax.bort_correction(layer, mode=mode, amplitude=amplitude)
          for layer in stacked
      ]
  )
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  # Read without the batch axis it is one (18, 4) matrix: a different correction
  # (except for the modes that only use the fan-in rows' own norms).
  if not (mode in ('l2-col', 'l1-col') and amplitude != 'adaptive'):
    assert not np.allclose(
        got,
        bort_jax.bort_correction(stacked, mode=mode, amplitude=amplitude),
        rtol=1e-3,
        atol=1e-4,
    )


@pytest.mark.parametrize('dims_kind', ['single', 'pytree', 'callable'])
def test_stacked_dimension_numbers_in_the_transformation(dims_kind):
  params = {
      'blocks': {
          'kernel': 0.4 * jax.random.normal(jax.random.key(3), (3, 6, 4))
      },
      'head': {'kernel': 0.4 * jax.random.normal(jax.random.key(4), (6, 4))},
  }
  pytree = {
      'blocks': {'kernel': STACKED},
      'head': {'kernel': BortDimensionNumbers()},
  }
  if (
      dims_kind == 'single'
  ):  # one reading for every selected leaf: select the stack only
    tx = bort_jax.add_bort_correction(
        GAMMA,
        dimension_numbers=STACKED,
        mask={'blocks': {'kernel': True}, 'head': {'kernel': False}},
    )
  else:
    tx = bort_jax.add_bort_correction(
        GAMMA,
        dimension_numbers=pytree
        if dims_kind == 'pytree'
        else (lambda p: pytree),
    )
  updates = correction_update(tx, params)
  expected_blocks = jnp.stack(
      [GAMMA * bort_jax.bort_correction(k) for k in params['blocks']['kernel']]
  )
  np.testing.assert_allclose(
      updates['blocks']['kernel'], expected_blocks, rtol=1e-5, atol=1e-6
  )
  expected_head = (
      0.0 * params['head']['kernel']
      if dims_kind == 'single'
      else GAMMA * bort_jax.bort_correction(params['head']['kernel'])
  )
  np.testing.assert_allclose(
      updates['head']['kernel'], expected_head, rtol=1e-5, atol=1e-6
  )


@pytest.mark.parametrize('amplitude', AMPLITUDES)
@pytest.mark.parametrize('mode', bort_jax.MODES)
def test_attention_kernel_with_two_output_axes_is_the_reshaped_matrix(
    mode, amplitude
):
  kernel = 0.4 * jax.random.normal(
      jax.random.key(5), (8, 2, 3)
  )  # (in, heads, head_dim)
  got = bort_jax.bort_correction(
      kernel,
      mode=mode,
      amplitude=amplitude,
      dimension_numbers=BortDimensionNumbers(output_axis=(1, 2)),
  )
  expected = bort_jax.bort_correction(
      kernel.reshape(8, 6), mode=mode, amplitude=amplitude
  ).reshape(8, 2, 3)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  # The default reading ((in*heads, head_dim) matrix) is a different one.
  assert not np.allclose(
      got,
      bort_jax.bort_correction(kernel, mode=mode, amplitude=amplitude),
      rtol=1e-3,
      atol=1e-4,
  )


# ------------------------------------------------------------------- errors


def _kernel():
  return 0.4 * jax.random.normal(jax.random.key(6), (6, 4))


CONSTRUCTORS = {
    # name: factory(**bort_kwargs) that validates its arguments
    'add_bort_correction': lambda **kw: bort_jax.add_bort_correction(
        kw.pop('gamma', GAMMA), **kw
    ),
    'bort_sgd': lambda **kw: bort_jax.bort_sgd(0.1, **{'gamma': GAMMA, **kw}),
    'bort_adamw': lambda **kw: bort_jax.bort_adamw(
        0.1, **{'gamma': GAMMA, **kw}
    ),
    'bort_correction': lambda **kw: bort_jax.bort_correction(_kernel(), **kw),
}


@pytest.mark.parametrize('mode', ['l3-full', 'L2-FULL', 'l2_full', ''])
@pytest.mark.parametrize('constructor', sorted(CONSTRUCTORS))
def test_unknown_mode_lists_the_valid_ones(constructor, mode):
  with pytest.raises(
      ValueError, match=re.escape(f'Unknown Bort mode {mode!r}')
  ) as error:
    CONSTRUCTORS[constructor](mode=mode)
  for valid in bort_jax.MODES:
    assert valid in str(error.value)


@pytest.mark.parametrize('gamma', [-0.1, -1])
@pytest.mark.parametrize(
    'constructor', ['add_bort_correction', 'bort_sgd', 'bort_adamw']
)
def test_negative_gamma(constructor, gamma):
  with pytest.raises(ValueError, match=f'gamma must be non-negative.*{gamma}'):
    CONSTRUCTORS[constructor](gamma=gamma)


@pytest.mark.parametrize(
    'amplitude,message',
    [
        (0.0, r'amplitude must be positive.*got 0\.0'),
        (-1.0, r'amplitude must be positive.*got -1\.0'),
        ('adaptve', r"Unknown amplitude 'adaptve'.*'adaptive'"),
        ('Adaptive', r"Unknown amplitude 'Adaptive'.*'adaptive'"),
    ],
)
@pytest.mark.parametrize(
    'constructor', sorted(CONSTRUCTORS) + ['orthogonality_report']
)
def test_invalid_amplitude(constructor, amplitude, message):
  build = CONSTRUCTORS.get(constructor) or (
      lambda **kw: bort_jax.orthogonality_report(
          {'dense': {'kernel': _kernel()}}, **kw
      )
  )
  with pytest.raises(ValueError, match=message):
    build(amplitude=amplitude)


def test_mask_selecting_a_vector_fails_at_init_when_callable(dict_params):
  tx = bort_jax.add_bort_correction(GAMMA, mask=select_all)
  with pytest.raises(
      ValueError, match=r'selects dense/bias of shape \(4,\).*at least 2 dim'
  ):
    tx.init(dict_params)


@pytest.mark.parametrize('leaf', [('dense', 'bias'), ('norm', 'scale')])
def test_mask_selecting_a_vector_fails_at_update_when_pytree(leaf, dict_params):
  mask = bort_jax.default_mask(dict_params)
  mask[leaf[0]][leaf[1]] = True
  tx = bort_jax.add_bort_correction(GAMMA, mask=mask)
  with pytest.raises(
      ValueError, match=re.escape(f'selects {leaf[0]}/{leaf[1]} of shape (4,)')
  ):
    tx.update(dict_params, tx.init(dict_params), dict_params)


def test_report_with_a_mask_selecting_a_vector_fails(dict_params):
  with pytest.raises(ValueError, match='selects dense/bias'):
    bort_jax.orthogonality_report(dict_params, mask=select_all)


BAD_DIMENSION_NUMBERS = {
    # name: (dimension_numbers for add_bort_correction on dict_params, message regex)
    'output_axis_missing_everywhere': (
        BortDimensionNumbers(output_axis=2),
        r'dense/kernel: output_axis=2 does not exist for a kernel of shape \(6, 4\)',
    ),
    'output_axis_missing_on_one_leaf': (
        lambda p: {
            'dense': {'kernel': BortDimensionNumbers(), 'bias': None},
            'conv': {'kernel': BortDimensionNumbers(output_axis=(2, 4))},
            'head': {'kernel': BortDimensionNumbers()},
            'norm': {'scale': None},
        },
        r'conv/kernel: output_axis=4 does not exist for a kernel of shape \(3, 3, 2, 4\)',
    ),
    'batch_axis_missing': (
        BortDimensionNumbers(batch_axis=-5),
        r'batch_axis=-5 does not exist',
    ),
    'overlapping_axes': (
        {
            'dense': {'kernel': BortDimensionNumbers(), 'bias': None},
            'conv': {
                'kernel': BortDimensionNumbers(output_axis=-1, batch_axis=3)
            },
            'head': {'kernel': BortDimensionNumbers()},
            'norm': {'scale': None},
        },
        r'conv/kernel: output_axis \(3,\) and batch_axis \(3,\) repeat an axis',
    ),
    'no_fan_in_left': (
        BortDimensionNumbers(output_axis=1, batch_axis=0),
        r'dense/kernel: kernel of shape \(6, 4\) has no fan-in axis',
    ),
    'dims_tree_structure': (
        {'dense': {'kernel': BortDimensionNumbers()}},
        r'dimension_numbers tree does not have the structure of the parameters',
    ),
}


@pytest.mark.parametrize('case', sorted(BAD_DIMENSION_NUMBERS))
def test_bad_dimension_numbers_name_the_leaf(case, dict_params):
  dims, message = BAD_DIMENSION_NUMBERS[case]
  with pytest.raises(ValueError, match=message):
    tx = bort_jax.add_bort_correction(GAMMA, dimension_numbers=dims)
    tx.update(dict_params, tx.init(dict_params), dict_params)
  with pytest.raises(ValueError, match=message):
    bort_jax.orthogonality_report(dict_params, dimension_numbers=dims)


@pytest.mark.parametrize(
    'dims,message',
    [
        (BortDimensionNumbers(output_axis=2), r'output_axis=2 does not exist'),
        (BortDimensionNumbers(output_axis=(0, -2)), r'repeat an axis'),
        (
            BortDimensionNumbers(output_axis=()),
            r'output_axis must name at least one axis',
        ),
    ],
)
def test_bad_dimension_numbers_in_bort_correction(dims, message):
  with pytest.raises(ValueError, match=message):
    bort_jax.bort_correction(_kernel(), dimension_numbers=dims)


@pytest.mark.parametrize('mask_kind', ['pytree', 'callable'])
def test_mask_with_the_wrong_structure(mask_kind, dict_params):
  wrong = {'dense': {'kernel': True}, 'conv': {'kernel': True}}
  mask = wrong if mask_kind == 'pytree' else (lambda p: wrong)
  tx = bort_jax.add_bort_correction(GAMMA, mask=mask)
  with pytest.raises(
      ValueError, match='mask does not have the structure of the parameters'
  ):
    tx.update(dict_params, tx.init(dict_params), dict_params)
  # Either kind of mask is checked as soon as params are known.
  with pytest.raises(ValueError, match='mask does not have the structure'):
    tx.init(dict_params)


def test_mask_must_be_static_under_jit(dict_params):
  tx = bort_jax.add_bort_correction(
      GAMMA,
      mask=lambda p: jax.tree.map(
          lambda x: jnp.asarray(x.ndim >= 2) & (jnp.sum(x) > 0), p
      ),
  )
  with pytest.raises(ValueError, match='must be a bool known at trace time'):
    jax.jit(tx.update)(dict_params, optax.EmptyState(), dict_params)
