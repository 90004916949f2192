"""Optimizers by name: each builds and steps, decays only Bort's leaves, and a
``bort_*`` optimizer differs from its baseline only by the Bort term."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import bort_jax
from bort_jax import configs, models
from bort_jax.configs import base
from bort_jax.training import loop
from bort_jax.training import optimizer_factory as optimizers

HYPERPARAMS = dict(learning_rate=1e-2, weight_decay=0.1, momentum=0.9)


@functools.cache
def cnn_params():
  """A small CNN's ``nnx.Param`` state (conv and dense kernels, biases)."""
  return loop.initialize_state(
      lambda: nnx.state(
          models.create_model(
              'invertible_cnn',
              num_classes=10,
              rngs=nnx.Rngs(0),
              channels=(4, 8),
              image_size=8,
          ),
          nnx.Param,
      )
  )


def grads_like(params, seed=1):
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda x: jnp.asarray(0.1 * rng.standard_normal(x.shape), jnp.float32),
      params,
  )


def paths(tree):
  return {
      jax.tree_util.keystr(p): x
      for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def test_optimizer_names_are_four_families_with_and_without_bort():
  assert set(optimizers.OPTIMIZER_NAMES) == {
      'sgd',
      'bort_sgd',
      'adamw',
      'bort_adamw',
      'lamb',
      'bort_lamb',
      'lion',
      'bort_lion',
  }


@pytest.mark.parametrize('name', optimizers.OPTIMIZER_NAMES)
def test_each_optimizer_builds_and_steps(name):
  params = cnn_params()
  tx = optimizers.create_optimizer(name, gamma=0.1, **HYPERPARAMS)
  updates, _ = jax.jit(tx.update)(grads_like(params), tx.init(params), params)
  new = optax.apply_updates(params, updates)
  for before, after in zip(jax.tree.leaves(params), jax.tree.leaves(new)):
    assert after.shape == before.shape and bool(jnp.all(jnp.isfinite(after)))
  assert any(
      not np.array_equal(a, b)
      for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(new))
  )


@pytest.mark.parametrize('name', optimizers.OPTIMIZER_NAMES)
def test_weight_decay_acts_on_the_bort_mask_only(name):
  """With zero gradients and gamma 0 the only change is the weight decay."""
  params = cnn_params()
  tx = optimizers.create_optimizer(name, gamma=0.0, **HYPERPARAMS)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  changed = {p: bool(jnp.any(u != 0)) for p, u in paths(updates).items()}
  mask = paths(bort_jax.default_mask(params))
  assert changed == {p: bool(m) for p, m in mask.items()}
  assert any(changed.values()) and not all(changed.values())


@pytest.mark.parametrize('family', ['sgd', 'adamw', 'lamb', 'lion'])
def test_bort_with_gamma_zero_is_the_baseline(family):
  params = cnn_params()
  baseline = optimizers.create_optimizer(family, **HYPERPARAMS)
  bort = optimizers.create_optimizer(f'bort_{family}', gamma=0.0, **HYPERPARAMS)
  state_a, state_b = baseline.init(params), bort.init(params)
  for seed in range(3):
    grads = grads_like(params, seed)
    updates_a, state_a = baseline.update(grads, state_a, params)
    updates_b, state_b = bort.update(grads, state_b, params)
    for a, b in zip(jax.tree.leaves(updates_a), jax.tree.leaves(updates_b)):
      np.testing.assert_array_equal(a, b)
    params = optax.apply_updates(params, updates_a)


@pytest.mark.parametrize('family', ['sgd', 'adamw', 'lamb', 'lion'])
def test_bort_term_changes_only_constrained_kernels(family):
  params = cnn_params()
  grads = grads_like(params)
  baseline = optimizers.create_optimizer(family, **HYPERPARAMS)
  bort = optimizers.create_optimizer(f'bort_{family}', gamma=0.5, **HYPERPARAMS)
  updates_a, _ = baseline.update(grads, baseline.init(params), params)
  updates_b, _ = bort.update(grads, bort.init(params), params)
  differs = {
      p: not np.array_equal(a, b)
      for (p, a), b in zip(paths(updates_a).items(), jax.tree.leaves(updates_b))
  }
  mask = {p: bool(m) for p, m in paths(bort_jax.default_mask(params)).items()}
  if family == 'lamb':  # the trust ratio rescales every leaf by its own norms
    assert all(differs[p] for p, m in mask.items() if m)
  else:
    assert differs == mask


@pytest.mark.parametrize(
    'name, reference',
    [
        (
            'bort_sgd',
            lambda: bort_jax.bort_sgd(
                1e-2,
                gamma=0.1,
                momentum=0.9,
                weight_decay=0.1,
                amplitude='adaptive',
                weight_decay_mask=bort_jax.default_mask,
            ),
        ),
        (
            'bort_adamw',
            lambda: bort_jax.bort_adamw(
                1e-2,
                gamma=0.1,
                weight_decay=0.1,
                amplitude='adaptive',
                weight_decay_mask=bort_jax.default_mask,
            ),
        ),
        (
            'adamw',
            lambda: optax.adamw(
                1e-2, weight_decay=0.1, mask=bort_jax.default_mask
            ),
        ),
        (
            'lamb',
            lambda: optax.lamb(
                1e-2, eps=1e-8, weight_decay=0.1, mask=bort_jax.default_mask
            ),
        ),
        (
            'lion',
            lambda: optax.lion(
                1e-2, weight_decay=0.1, mask=bort_jax.default_mask
            ),
        ),
    ],
)
def test_matches_the_library_optimizers(name, reference):
  params = cnn_params()
  kwargs = dict(HYPERPARAMS, gamma=0.1, amplitude='adaptive')
  if name == 'lion':
    kwargs.update(b2=0.99)  # optax.lion's default
  tx, ref = optimizers.create_optimizer(name, **kwargs), reference()
  state, ref_state = tx.init(params), ref.init(params)
  for seed in range(2):
    grads = grads_like(params, seed)
    updates, state = tx.update(grads, state, params)
    expected, ref_state = ref.update(grads, ref_state, params)
    for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(expected)):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    params = optax.apply_updates(params, updates)


def test_unknown_optimizer_lists_the_valid_names():
  with pytest.raises(
      ValueError, match=r"unknown optimizer 'bort_adam'.*bort_adamw.*lion"
  ):
    optimizers.create_optimizer('bort_adam', learning_rate=1e-3)


@pytest.mark.parametrize(
    'changes, expected',
    [
        # (config changes, {step: learning rate}) with 10 steps per epoch
        (dict(schedule='constant'), {0: 0.1, 55: 0.1, 99: 0.1}),
        (dict(schedule='cosine'), {0: 0.1, 50: 0.05, 100: 0.0}),
        (
            dict(schedule='cosine', warmup_epochs=2.0),
            {0: 0.0, 10: 0.05, 20: 0.1, 60: 0.05, 100: 0.0},
        ),
        (
            dict(schedule='step', lr_decay_epochs=(3, 6)),
            {29: 0.1, 30: 0.01, 59: 0.01, 60: 0.001},
        ),
        (
            dict(schedule='step', lr_decay_epochs=(3,), warmup_epochs=1.0),
            {5: 0.05, 10: 0.1, 30: 0.01},
        ),
        (
            dict(
                schedule='constant', batch_size=512, lr_reference_batch_size=256
            ),
            {0: 0.2},
        ),
    ],
)
def test_learning_rate_schedules(changes, expected):
  config = configs.replace(
      base.get_config(), learning_rate=0.1, epochs=10, **changes
  )
  schedule = optimizers.create_learning_rate_schedule(
      config, steps_per_epoch=10
  )
  for step, rate in expected.items():
    assert float(schedule(step)) == pytest.approx(rate, abs=1e-7), step


def test_optimizer_from_config_uses_the_schedule():
  config = configs.replace(
      base.get_config(),
      optimizer='bort_sgd',
      learning_rate=0.1,
      gamma=0.05,
      epochs=2,
  )
  tx, schedule = optimizers.optimizer_from_config(config, steps_per_epoch=5)
  assert float(schedule(10)) == pytest.approx(0.0)
  params = cnn_params()
  updates, _ = tx.update(grads_like(params), tx.init(params), params)
  assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))


@pytest.mark.parametrize('name', ['bort_sgd', 'bort_adamw'])
def test_bort_exclude_leaves_the_head_out_of_the_bort_term_only(name):
  params = cnn_params()
  head = next(
      p for p in paths(params) if 'kernel' in p and "['layers'][9]" in p
  )
  grads = grads_like(params)
  updates = {}
  for gamma, exclude in ((0.0, ()), (0.5, ()), (0.5, (r'^layers/9/',))):
    tx = optimizers.create_optimizer(
        name, gamma=gamma, bort_exclude=exclude, **HYPERPARAMS
    )
    updates[gamma, exclude] = paths(
        tx.update(grads, tx.init(params), params)[0]
    )
  baseline, full, without_head = updates.values()
  np.testing.assert_array_equal(without_head[head], baseline[head])
  assert not np.array_equal(full[head], baseline[head])
  for p, m in paths(bort_jax.default_mask(params)).items():
    if m and p != head:
      np.testing.assert_array_equal(without_head[p], full[p])


def test_bort_exclude_in_the_config_is_checked_and_used():
  with pytest.raises(ValueError, match='is not a regular expression'):
    configs.replace(
        base.get_config(), optimizer='bort_sgd', gamma=0.1, bort_exclude=('[',)
    )
  config = configs.replace(
      base.get_config(),
      optimizer='bort_sgd',
      gamma=0.1,
      bort_exclude=('^nothing/',),
  )
  tx, _ = optimizers.optimizer_from_config(config, steps_per_epoch=10)
  with pytest.raises(ValueError, match='match no kernel'):
    tx.update(cnn_params(), tx.init(cnn_params()), cnn_params())
