"""bort_jax's transformations follow optax's conventions.

Modelled on optax's own contrib battery: jit, inject_hyperparams, schedules,
wrappers (MultiSteps, apply_if_finite), chaining with other optimizers, dtypes,
state size, the no-params error, and Flax (nnx and linen) integration.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from optax._src import base as optax_base

import bort_jax

LR = 1e-2
GAMMA = 0.1
WEIGHT_DECAY = 1e-2

# name -> factory(gamma) of a Bort optimizer; every one of them must put the
# Bort term on the kernels.
BORT_OPTIMIZERS = {
    'bort_sgd': lambda gamma: bort_jax.bort_sgd(
        LR, gamma=gamma, momentum=0.9, nesterov=True, weight_decay=WEIGHT_DECAY
    ),
    'bort_adamw': lambda gamma: bort_jax.bort_adamw(
        LR, gamma=gamma, weight_decay=WEIGHT_DECAY
    ),
    'chain_add_bort_correction': lambda gamma: optax.chain(
        optax.scale_by_adam(),
        bort_jax.add_bort_correction(gamma, amplitude='adaptive'),
        optax.scale_by_learning_rate(LR),
    ),
}


# ------------------------------------------------------------------------ jit


@pytest.mark.parametrize('name', sorted(BORT_OPTIMIZERS))
def test_jit_matches_eager(name, dict_params, helpers):
  grads = helpers.grads_sequence(dict_params)
  tx = BORT_OPTIMIZERS[name](GAMMA)
  eager_updates, eager_params, _ = helpers.run_steps(
      tx, dict_params, grads, jit=False
  )
  jit_updates, jit_params, _ = helpers.run_steps(
      tx, dict_params, grads, jit=True
  )
  for step, (eager, jitted) in enumerate(zip(eager_updates, jit_updates)):
    helpers.assert_trees_close(
        jitted, eager, rtol=1e-5, atol=1e-7, err_msg=f'step {step}'
    )
  helpers.assert_trees_close(jit_params, eager_params, rtol=1e-5, atol=1e-7)
  # The Bort term is really there: with gamma = 0 the kernels move differently.
  off_updates, _, _ = helpers.run_steps(
      BORT_OPTIMIZERS[name](0.0), dict_params, grads[:1]
  )
  with_bort, without = (
      helpers.leaves_by_path(u[0]) for u in (jit_updates, off_updates)
  )
  for path in with_bort:
    if path.endswith('kernel'):
      assert np.abs(with_bort[path] - without[path]).max() > 1e-6, path
    else:
      np.testing.assert_array_equal(
          with_bort[path], without[path], err_msg=path
      )


@pytest.mark.parametrize('amplitude', [1.0, 'adaptive'])
def test_batched_and_per_kernel_corrections_agree(amplitude, helpers):
  # Five (6, 4) matrices: two kernels and a stack of three, with different
  # scales so that an amplitude shared across the batch would show.
  keys = jax.random.split(jax.random.key(0), 3)
  params = {
      'a': {'kernel': 0.2 * jax.random.normal(keys[0], (6, 4))},
      'b': {'kernel': 0.9 * jax.random.normal(keys[1], (6, 4))},
      'stack': {'kernel': 0.5 * jax.random.normal(keys[2], (3, 6, 4))},
  }
  dims = {
      'a': {'kernel': bort_jax.BortDimensionNumbers()},
      'b': {'kernel': bort_jax.BortDimensionNumbers()},
      'stack': {
          'kernel': bort_jax.BortDimensionNumbers(output_axis=-1, batch_axis=0)
      },
  }
  zeros = jax.tree.map(jnp.zeros_like, params)
  results = {}
  for batch in (True, False):
    tx = bort_jax.add_bort_correction(
        GAMMA, amplitude=amplitude, dimension_numbers=dims, batch_kernels=batch
    )
    results[batch] = jax.jit(tx.update)(zeros, tx.init(params), params)[0]
  helpers.assert_trees_close(
      results[True], results[False], rtol=1e-5, atol=1e-7
  )
  for name in ('a', 'b'):
    np.testing.assert_allclose(
        results[True][name]['kernel'],
        GAMMA
        * bort_jax.bort_correction(params[name]['kernel'], amplitude=amplitude),
        rtol=1e-5,
        atol=1e-7,
    )


# ---------------------------------------------------------- inject_hyperparams

INJECT_CASES = {
    'adamw': (
        bort_jax.bort_adamw,
        dict(learning_rate=LR, gamma=GAMMA, weight_decay=WEIGHT_DECAY),
    ),
    'sgd_momentum': (
        bort_jax.bort_sgd,
        dict(
            learning_rate=LR,
            gamma=GAMMA,
            momentum=0.9,
            weight_decay=WEIGHT_DECAY,
        ),
    ),
    'sgd_plain': (bort_jax.bort_sgd, dict(learning_rate=LR, gamma=GAMMA)),
}


@pytest.mark.parametrize('amplitude', [0.5, 'adaptive'])
@pytest.mark.parametrize('case', sorted(INJECT_CASES))
def test_inject_hyperparams_matches_direct_call(
    case, amplitude, dict_params, helpers
):
  factory, kwargs = INJECT_CASES[case]
  grads = helpers.grads_sequence(dict_params)
  direct_updates, direct_params, _ = helpers.run_steps(
      factory(**kwargs, amplitude=amplitude), dict_params, grads, jit=False
  )
  injected = optax.inject_hyperparams(factory)(**kwargs, amplitude=amplitude)
  injected_updates, injected_params, state = helpers.run_steps(
      injected, dict_params, grads, jit=False
  )
  assert 'gamma' in state.hyperparams and 'learning_rate' in state.hyperparams
  for step, (direct, inj) in enumerate(zip(direct_updates, injected_updates)):
    helpers.assert_trees_close(
        inj, direct, rtol=0, atol=1e-7, err_msg=f'step {step}'
    )
  # optax.inject_hyperparams(optax.adamw) itself differs from optax.adamw by up to
  # ~7e-8 per step (its b1, b2, eps become float32 arrays): params differ by at
  # most the sum of the per-step differences.
  helpers.assert_trees_close(
      injected_params, direct_params, rtol=0, atol=len(grads) * 1e-7
  )


REFERENCE_CASES = {
    # name: (bort factory, kwargs, plain optax factory with the same other hyperparameters)
    'adamw': (
        bort_jax.bort_adamw,
        dict(weight_decay=WEIGHT_DECAY),
        lambda lr: optax.adamw(lr, weight_decay=WEIGHT_DECAY),
    ),
    'sgd': (bort_jax.bort_sgd, dict(), lambda lr: optax.sgd(lr)),
    # BortS's momentum accumulates the Bort term: compared with optax.sgd given
    # the same momentum buffer.
    'sgd_momentum': (
        bort_jax.bort_sgd,
        dict(momentum=0.9),
        lambda lr: optax.sgd(lr, momentum=0.9),
    ),
}


@pytest.mark.parametrize(
    'case,amplitude',
    [('adamw', 'adaptive'), ('sgd', 1.0), ('sgd_momentum', 'adaptive')],
)
def test_changing_injected_gamma_and_learning_rate_takes_effect(
    case, amplitude, dict_params, helpers
):
  factory, kwargs, reference = REFERENCE_CASES[case]
  tx = optax.inject_hyperparams(factory)(
      learning_rate=LR, gamma=GAMMA, amplitude=amplitude, **kwargs
  )
  update = jax.jit(tx.update)
  grads = helpers.grads_sequence(dict_params, num_steps=4)
  params, state = dict_params, tx.init(dict_params)
  ref_tx = reference(LR)
  ref_state = ref_tx.init(dict_params)

  def reference_update(grad, ref_tx, ref_state, state):
    if 'momentum' in case:  # same buffer as the Bort optimizer's
      ref_state = optax.tree_utils.tree_set(
          ref_state, trace=optax.tree_utils.tree_get(state, 'trace')
      )
    return ref_tx.update(grad, ref_state, params)

  for step, grad in enumerate(grads):
    if step == 2:
      state.hyperparams['gamma'] = jnp.zeros_like(state.hyperparams['gamma'])
    if step == 3:
      state.hyperparams['learning_rate'] = jnp.asarray(3 * LR, jnp.float32)
      ref_tx = reference(3 * LR)
    expected, ref_state = reference_update(grad, ref_tx, ref_state, state)
    updates, state = update(grad, state, params)
    got, want = helpers.leaves_by_path(updates), helpers.leaves_by_path(
        expected
    )
    for path in got:
      if step >= 2 or not path.endswith('kernel'):
        np.testing.assert_allclose(
            got[path],
            want[path],
            rtol=1e-5,
            atol=1e-7,
            err_msg=f'step {step} {path}',
        )
      else:  # gamma > 0: kernels get the Bort term on top
        assert (
            np.abs(got[path] - want[path]).max() > 1e-5
        ), f'step {step} {path}'
    params = optax.apply_updates(params, updates)


# ------------------------------------------------------------- gamma schedule


def gamma_schedule(count):
  return 0.05 * (
      count + 1.0
  )  # distinct at every step: catches off-by-one counts


SCHEDULE_CASES = {
    'add_bort_correction': lambda gamma: bort_jax.add_bort_correction(gamma),
    'bort_sgd': lambda gamma: bort_jax.bort_sgd(
        LR, gamma=gamma, weight_decay=WEIGHT_DECAY
    ),
}


@pytest.mark.parametrize('case', sorted(SCHEDULE_CASES))
def test_gamma_schedule_uses_gamma_of_the_step_count(
    case, dict_params, helpers
):
  factory = SCHEDULE_CASES[case]
  tx = factory(gamma_schedule)
  update = jax.jit(tx.update)
  state = tx.init(dict_params)
  counts = [
      leaf
      for leaf in jax.tree.leaves(state)
      if jnp.issubdtype(leaf.dtype, jnp.integer)
  ]
  assert len(counts) == 1 and int(counts[0]) == 0, state
  params = dict_params
  for step, grad in enumerate(helpers.grads_sequence(dict_params, num_steps=4)):
    updates, state = update(grad, state, params)
    constant = factory(float(gamma_schedule(step)))
    expected, _ = constant.update(grad, constant.init(params), params)
    helpers.assert_trees_close(
        updates, expected, rtol=1e-5, atol=1e-7, err_msg=f'step {step}'
    )
    wrong = factory(float(gamma_schedule(step + 1)))
    off_by_one, _ = wrong.update(grad, wrong.init(params), params)
    assert not np.allclose(
        updates['dense']['kernel'], off_by_one['dense']['kernel']
    )
    assert int(optax.tree_utils.tree_get(state, 'count')) == step + 1
    params = optax.apply_updates(params, updates)


# ------------------------------------------------------------------- wrappers

WRAPPED_CASES = {
    'bort_adamw': lambda: bort_jax.bort_adamw(
        LR, gamma=GAMMA, weight_decay=WEIGHT_DECAY
    ),
    'bort_sgd_momentum': lambda: bort_jax.bort_sgd(
        LR, gamma=GAMMA, momentum=0.9
    ),
}


@pytest.mark.parametrize(
    'case,every_k', [('bort_adamw', 2), ('bort_sgd_momentum', 3)]
)
def test_multi_steps_matches_inner_optimizer_on_averaged_grads(
    case, every_k, dict_params, helpers
):
  num_outer = 2
  grads = helpers.grads_sequence(dict_params, num_steps=every_k * num_outer)
  multi = optax.MultiSteps(WRAPPED_CASES[case](), every_k_schedule=every_k)
  update = jax.jit(multi.update)
  params, state = dict_params, multi.init(dict_params)
  multi_updates = []
  for step, grad in enumerate(grads):
    updates, state = update(grad, state, params)
    updates = jax.block_until_ready(updates)
    if (step + 1) % every_k:
      assert all(
          not np.any(leaf) for leaf in jax.tree.leaves(updates)
      ), f'mini-step {step}'
    else:
      multi_updates.append(updates)
    params = optax.apply_updates(params, updates)

  averaged = [
      jax.tree.map(
          lambda *g: sum(g) / every_k, *grads[i * every_k : (i + 1) * every_k]
      )
      for i in range(num_outer)
  ]
  inner_updates, inner_params, _ = helpers.run_steps(
      WRAPPED_CASES[case](), dict_params, averaged
  )
  for step, (got, want) in enumerate(zip(multi_updates, inner_updates)):
    helpers.assert_trees_close(
        got, want, rtol=1e-5, atol=1e-7, err_msg=f'outer step {step}'
    )
  helpers.assert_trees_close(params, inner_params, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('case', ['bort_adamw'])
def test_apply_if_finite_skips_nan_gradients(case, dict_params, helpers):
  tx = optax.apply_if_finite(WRAPPED_CASES[case](), max_consecutive_errors=5)
  update = jax.jit(tx.update)
  good = helpers.grads_sequence(dict_params, num_steps=2)
  bad = helpers.random_like(dict_params, 7)
  bad['dense']['kernel'] = bad['dense']['kernel'].at[0, 0].set(jnp.nan)

  params, state = dict_params, tx.init(dict_params)
  updates, state = update(good[0], state, params)
  params = optax.apply_updates(params, updates)
  before_nan = params
  updates, state = update(bad, state, params)
  params = jax.block_until_ready(optax.apply_updates(params, updates))
  helpers.assert_trees_close(
      params, before_nan, rtol=0, atol=0, err_msg='NaN step changed params'
  )
  assert int(state.notfinite_count) == 1 and int(state.total_notfinite) == 1
  assert not bool(state.last_finite)
  updates, state = update(good[1], state, params)
  params = optax.apply_updates(params, updates)
  assert int(state.notfinite_count) == 0 and int(state.total_notfinite) == 1
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(params))

  # The NaN step left no trace: same as the inner optimizer on the finite grads.
  _, expected, _ = helpers.run_steps(WRAPPED_CASES[case](), dict_params, good)
  helpers.assert_trees_close(params, expected, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------- chains: Lion, LAMB


def lion_chain(gamma, lr=LR, wd=WEIGHT_DECAY):
  return optax.chain(
      optax.scale_by_lion(),
      optax.add_decayed_weights(wd),
      bort_jax.add_bort_correction(gamma),
      optax.scale_by_learning_rate(lr),
  )


def lamb_chain(gamma, lr=LR, wd=WEIGHT_DECAY):
  return optax.chain(
      optax.scale_by_adam(eps=1e-6),
      optax.add_decayed_weights(wd),
      bort_jax.add_bort_correction(gamma),
      optax.scale_by_trust_ratio(),
      optax.scale_by_learning_rate(lr),
  )


CHAINS = {
    'lion': (lion_chain, lambda lr, wd: optax.lion(lr, weight_decay=wd)),
    'lamb': (lamb_chain, lambda lr, wd: optax.lamb(lr, weight_decay=wd)),
}


@pytest.mark.parametrize('name', sorted(CHAINS))
def test_chain_with_gamma_zero_is_the_plain_optimizer(
    name, dict_params, helpers
):
  chain, plain = CHAINS[name]
  grads = helpers.grads_sequence(dict_params)
  chained_updates, chained_params, _ = helpers.run_steps(
      chain(0.0), dict_params, grads
  )
  plain_updates, plain_params, _ = helpers.run_steps(
      plain(LR, WEIGHT_DECAY), dict_params, grads
  )
  for step, (got, want) in enumerate(zip(chained_updates, plain_updates)):
    helpers.assert_trees_close(
        got, want, rtol=1e-6, atol=0, err_msg=f'step {step}'
    )
  helpers.assert_trees_close(chained_params, plain_params, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    'name,lr,num_steps', [('lion', 0.05, 40), ('lamb', 0.02, 60)]
)
def test_chain_with_zero_task_gradients_orthogonalises(
    name, lr, num_steps, dict_params, helpers
):
  chain, _ = CHAINS[name]
  zeros = jax.tree.map(jnp.zeros_like, dict_params)
  final = {}
  for gamma in (1.0, 0.0):
    tx = chain(gamma, lr=lr, wd=0.0)
    update = jax.jit(tx.update)
    params, state = dict_params, tx.init(dict_params)
    for _ in range(num_steps):
      updates, state = update(zeros, state, params)
      params = jax.block_until_ready(optax.apply_updates(params, updates))
    final[gamma] = params
  report = jax.jit(bort_jax.orthogonality_report)
  before, after, without_bort = (
      report(dict_params),
      report(final[1.0]),
      report(final[0.0]),
  )
  assert (
      before.keys()
      == after.keys()
      == {'dense/kernel', 'conv/kernel', 'head/kernel'}
  )
  for path in before:
    start, end = float(before[path]['relative_error']), float(
        after[path]['relative_error']
    )
    assert start > 0.5 and end < 0.1 * start, (path, start, end)
    np.testing.assert_allclose(
        without_bort[path]['relative_error'], start, rtol=1e-6
    )
  # Leaves Bort does not constrain follow the gamma = 0 trajectory exactly.
  bort_leaves, plain_leaves = (
      helpers.leaves_by_path(final[g]) for g in (1.0, 0.0)
  )
  for path, leaf in bort_leaves.items():
    if not path.endswith('kernel'):
      np.testing.assert_array_equal(leaf, plain_leaves[path], err_msg=path)


@pytest.mark.parametrize('gamma', [0.1, 2.0])
def test_lion_chain_difference_is_exactly_the_scaled_correction(
    gamma, dict_params, helpers
):
  grads = helpers.grads_sequence(dict_params, num_steps=1)[0]
  with_bort, _ = lion_chain(gamma).update(
      grads, lion_chain(gamma).init(dict_params), dict_params
  )
  without, _ = lion_chain(0.0).update(
      grads, lion_chain(0.0).init(dict_params), dict_params
  )
  difference = jax.tree.map(lambda a, b: a - b, with_bort, without)
  for path, leaf in helpers.leaves_by_path(dict_params).items():
    got = helpers.leaves_by_path(difference)[path]
    if path.endswith('kernel'):
      expected = -LR * gamma * bort_jax.bort_correction(leaf)
      assert np.abs(expected).max() > 1e-4
    else:
      expected = np.zeros_like(leaf)
    np.testing.assert_allclose(
        got, expected, rtol=1e-4, atol=1e-8, err_msg=path
    )


# ----------------------------------------------------------------- dtypes

DTYPE_OPTIMIZERS = {
    'bort_sgd_momentum': lambda: bort_jax.bort_sgd(
        LR, gamma=GAMMA, momentum=0.9, weight_decay=WEIGHT_DECAY
    ),
    'bort_adamw_schedule_adaptive': lambda: bort_jax.bort_adamw(
        optax.cosine_decay_schedule(LR, 10),
        gamma=optax.linear_schedule(GAMMA, 0.0, 10),
        amplitude='adaptive',
    ),
}


@pytest.mark.parametrize(
    'dtype',
    [jnp.bfloat16, jnp.float16, jnp.float32],
    ids=['bf16', 'f16', 'f32'],
)
@pytest.mark.parametrize('name', sorted(DTYPE_OPTIMIZERS))
def test_dtypes_are_preserved(name, dtype, helpers):
  params = helpers.make_dict_params(dtype)
  tx = DTYPE_OPTIMIZERS[name]()
  state = tx.init(params)
  init_dtypes = jax.tree.map(lambda x: x.dtype, state)
  update = jax.jit(tx.update)
  for step, grad in enumerate(helpers.grads_sequence(params)):
    updates, state = update(grad, state, params)
    for path, leaf in helpers.leaves_by_path(updates).items():
      assert leaf.dtype == dtype, (step, path, leaf.dtype)
    params = optax.apply_updates(params, updates)
    for path, leaf in helpers.leaves_by_path(params).items():
      assert leaf.dtype == dtype, (step, path, leaf.dtype)
      if path.endswith(
          'kernel'
      ):  # (optax's own f16 Adam overflows where eps underflows)
        assert np.all(np.isfinite(np.asarray(leaf, np.float32))), (step, path)
  assert jax.tree.map(lambda x: x.dtype, state) == init_dtypes


# ----------------------------------------------------------- state size


def test_constant_gamma_keeps_no_state(dict_params):
  assert (
      bort_jax.add_bort_correction(0.1).init(dict_params) == optax.EmptyState()
  )
  scheduled = bort_jax.add_bort_correction(optax.constant_schedule(0.1)).init(
      dict_params
  )
  assert isinstance(scheduled, bort_jax.AddBortCorrectionState)
  assert len(jax.tree.leaves(scheduled)) == 1


STATE_SIZE_CASES = {
    'adamw': (
        lambda g: bort_jax.bort_adamw(LR, gamma=g),
        lambda: optax.adamw(LR),
    ),
    'sgd_momentum': (
        lambda g: bort_jax.bort_sgd(LR, gamma=g, momentum=0.9),
        lambda: optax.sgd(LR, momentum=0.9),
    ),
    'sgd': (lambda g: bort_jax.bort_sgd(LR, gamma=g), lambda: optax.sgd(LR)),
}


@pytest.mark.parametrize('case', sorted(STATE_SIZE_CASES))
def test_state_has_as_many_arrays_as_the_plain_optimizer(case, dict_params):
  bort, plain = STATE_SIZE_CASES[case]
  plain_leaves = jax.tree.leaves(plain().init(dict_params))
  bort_leaves = jax.tree.leaves(bort(GAMMA).init(dict_params))
  assert len(bort_leaves) == len(plain_leaves)
  assert sum(x.size for x in bort_leaves) == sum(x.size for x in plain_leaves)
  # A schedule adds exactly its step count.
  assert len(
      jax.tree.leaves(bort(optax.constant_schedule(GAMMA)).init(dict_params))
  ) == (len(plain_leaves) + 1)


# ------------------------------------------------------------ missing params

NO_PARAMS_CASES = {
    'add_bort_correction': lambda: bort_jax.add_bort_correction(GAMMA),
    'add_bort_correction_schedule': lambda: bort_jax.add_bort_correction(
        lambda c: GAMMA
    ),
    'adam_then_bort': lambda: optax.chain(
        optax.scale_by_adam(), bort_jax.add_bort_correction(GAMMA)
    ),
    'bort_sgd': lambda: bort_jax.bort_sgd(LR, gamma=GAMMA),
    'bort_adamw': lambda: bort_jax.bort_adamw(
        LR, gamma=GAMMA, weight_decay=0.0
    ),
}


@pytest.mark.parametrize('case', sorted(NO_PARAMS_CASES))
def test_update_without_params_raises_optax_message(case, dict_params):
  tx = NO_PARAMS_CASES[case]()
  state = tx.init(dict_params)
  with pytest.raises(ValueError, match=re.escape(optax_base.NO_PARAMS_MSG)):
    tx.update(dict_params, state)


# --------------------------------------------------------------------- Flax


def check_bort_only_on_kernels(
    helpers, params_before, bort_updates, plain_updates, lr, gamma
):
  """Kernels differ from the plain update by -lr*gamma*Δ; every other leaf is identical."""
  before, bort, plain = (
      helpers.leaves_by_path(t)
      for t in (params_before, bort_updates, plain_updates)
  )
  assert before.keys() == bort.keys() == plain.keys()
  kernels = [p for p in before if p.endswith('kernel')]
  assert kernels
  for path in before:
    if path.endswith('kernel'):
      expected = np.asarray(plain[path]) - lr * gamma * np.asarray(
          bort_jax.bort_correction(jnp.asarray(before[path]))
      )
      np.testing.assert_allclose(
          bort[path], expected, rtol=1e-4, atol=1e-7, err_msg=path
      )
      assert (
          np.abs(np.asarray(bort[path]) - np.asarray(plain[path])).max() > 1e-6
      ), path
    else:
      np.testing.assert_array_equal(bort[path], plain[path], err_msg=path)
  return kernels


def test_nnx_optimizer_applies_bort_to_kernels_only(helpers):
  gamma = 0.5
  bort_model, plain_model = helpers.NnxNet(nnx.Rngs(0)), helpers.NnxNet(
      nnx.Rngs(0)
  )
  bort_opt = nnx.Optimizer(
      bort_model,
      bort_jax.bort_adamw(LR, gamma=gamma, weight_decay=WEIGHT_DECAY),
      wrt=nnx.Param,
  )
  plain_opt = nnx.Optimizer(
      plain_model, optax.adamw(LR, weight_decay=WEIGHT_DECAY), wrt=nnx.Param
  )
  images = jax.random.normal(jax.random.key(1), (2, 5, 5, 2))
  ids = jnp.array([1, 3])

  @nnx.jit
  def grad_fn(model):
    return nnx.grad(lambda m: jnp.sum(m(images, ids) ** 2))(model)

  @nnx.jit
  def update_fn(model, optimizer, grads):
    return optimizer.update(model, grads)

  pure_params = lambda model: nnx.as_pure(nnx.state(model, nnx.Param))
  for step in range(2):
    grads = grad_fn(bort_model)  # the same grads for both optimizers
    before = pure_params(bort_model)
    bort_updates = update_fn(bort_model, bort_opt, grads)
    plain_updates = update_fn(plain_model, plain_opt, grads)
    if (
        step == 0
    ):  # same params before the step: the difference is the Bort term
      kernels = check_bort_only_on_kernels(
          helpers, before, bort_updates, plain_updates, LR, gamma
      )
      assert set(kernels) == helpers.NNX_KERNELS
  # After two steps the kernels differ, and biases, scales and embeddings are
  # exactly where plain AdamW puts them.
  after_bort = helpers.leaves_by_path(pure_params(bort_model))
  after_plain = helpers.leaves_by_path(pure_params(plain_model))
  assert {p for p in after_bort if not p.endswith('kernel')} == {
      'conv/bias',
      'linear/bias',
      'norm/scale',
      'norm/bias',
      'embed/embedding',
  }
  for path in after_bort:
    if path.endswith('kernel'):
      assert not np.allclose(after_bort[path], after_plain[path]), path
    else:
      np.testing.assert_array_equal(
          after_bort[path], after_plain[path], err_msg=path
      )
  assert int(bort_opt.step[...]) == 2


def test_linen_params_work_with_the_default_mask(helpers, linen_params):
  gamma = 0.5
  grads = helpers.random_like(linen_params, 3)
  bort_tx = bort_jax.bort_adamw(LR, gamma=gamma, weight_decay=WEIGHT_DECAY)
  plain_tx = optax.adamw(LR, weight_decay=WEIGHT_DECAY)
  bort_updates, _ = jax.jit(bort_tx.update)(
      grads, bort_tx.init(linen_params), linen_params
  )
  plain_updates, _ = jax.jit(plain_tx.update)(
      grads, plain_tx.init(linen_params), linen_params
  )
  kernels = check_bort_only_on_kernels(
      helpers, linen_params, bort_updates, plain_updates, LR, gamma
  )
  assert set(kernels) == helpers.LINEN_KERNELS
