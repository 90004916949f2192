"""Bort's decoupled term after a complete optimizer: ``with_bort``.

``with_bort(optimizer, learning_rate=lr, gamma=g)`` must add exactly
``-lr(t) * g * Delta(params)`` to the optimizer's own updates, with ``t`` the
optimizer's count of real updates, after every optimizer and inside the
optax wrappers that skip, accumulate, mask or inject hyperparameters.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import bort_jax

# Halves at every update: a schedule read at the wrong count shows.
SCHEDULE = optax.exponential_decay(2e-2, transition_steps=1, decay_rate=0.5)
GAMMA = 0.7
NUM_STEPS = 4

# Each takes the learning rate only, so that optax.inject_hyperparams injects
# nothing else (it would inject adafactor's integer options too).
OPTIMIZERS = {
    'adamw': lambda learning_rate: optax.adamw(learning_rate, weight_decay=0.1),
    'sgd': lambda learning_rate: optax.sgd(learning_rate, momentum=0.9),
    'lion': lambda learning_rate: optax.lion(learning_rate),
    'adafactor': lambda learning_rate: optax.adafactor(learning_rate),
    'muon': lambda learning_rate: optax.contrib.muon(learning_rate),
}


def _outside_head(params):
  return {
      name: jax.tree.map(lambda _, keep=name != 'head': keep, sub)
      for name, sub in params.items()
  }


def _every_leaf(params):
  return jax.tree.map(lambda _: True, params)


# wrapper -> (wrap(build) -> transformation, optax mask of the leaves the
# wrapped optimizer sees, steps that are not real updates).
WRAPPERS = {
    'plain': (lambda build: build(SCHEDULE), _every_leaf, ()),
    'multi_steps': (
        lambda build: optax.MultiSteps(build(SCHEDULE), every_k_schedule=2),
        _every_leaf,
        (0, 2),
    ),
    'inject_hyperparams': (
        lambda build: optax.inject_hyperparams(build)(learning_rate=SCHEDULE),
        _every_leaf,
        (),
    ),
    'masked': (
        lambda build: optax.masked(build(SCHEDULE), _outside_head),
        _outside_head,
        (),
    ),
    'apply_if_finite': (
        lambda build: optax.apply_if_finite(
            build(SCHEDULE), max_consecutive_errors=3
        ),
        _every_leaf,
        (1,),  # its gradients are NaN
    ),
}


def _with_bort(optimizer):
  return lambda learning_rate: bort_jax.with_bort(
      optimizer(learning_rate), learning_rate=learning_rate, gamma=GAMMA
  )


def _expected_difference(params, visible, coefficient):
  """``coefficient * Delta`` on the default kernels the optimizer sees, else 0."""
  selected = jax.tree.map(
      lambda a, b: a and b, bort_jax.default_mask(params), visible
  )
  return jax.tree.map(
      lambda p, chosen: coefficient * bort_jax.bort_correction(p)
      if chosen
      else jnp.zeros_like(p),
      params,
      selected,
  )


@pytest.mark.parametrize('wrapper', list(WRAPPERS))
@pytest.mark.parametrize('optimizer', list(OPTIMIZERS))
def test_adds_the_decoupled_step_to_any_optimizer(
    optimizer, wrapper, dict_params, helpers
):
  wrap, visible, skipped = WRAPPERS[wrapper]
  with_bort = wrap(_with_bort(OPTIMIZERS[optimizer]))
  plain = wrap(OPTIMIZERS[optimizer])
  grads = helpers.grads_sequence(dict_params, num_steps=NUM_STEPS)
  if wrapper == 'apply_if_finite':
    grads[1] = jax.tree.map(lambda g: g * jnp.nan, grads[1])

  update_bort, update_plain = jax.jit(with_bort.update), jax.jit(plain.update)
  params = dict_params
  state_bort, state_plain = with_bort.init(params), plain.init(params)
  real_updates = 0
  for step, grad in enumerate(grads):
    updates_bort, state_bort = update_bort(grad, state_bort, params)
    updates_plain, state_plain = update_plain(grad, state_plain, params)
    difference = jax.tree.map(jnp.subtract, updates_bort, updates_plain)
    if step in skipped:
      coefficient = 0.0
    else:
      coefficient = -float(SCHEDULE(real_updates)) * GAMMA
      real_updates += 1
    helpers.assert_trees_close(
        difference,
        _expected_difference(params, visible(params), coefficient),
        rtol=1e-5,
        atol=1e-7,
        err_msg=f'{optimizer} {wrapper} step {step}',
    )
    params = optax.apply_updates(params, updates_bort)
  assert real_updates == NUM_STEPS - len(skipped)


def test_after_adamw_it_is_bort_adamw(dict_params, helpers):
  gamma = optax.linear_schedule(0.0, 3.0, 3)
  chained = bort_jax.with_bort(
      optax.adamw(SCHEDULE, weight_decay=0.1),
      learning_rate=SCHEDULE,
      gamma=gamma,
      amplitude='adaptive',
  )
  bort_a = bort_jax.bort_adamw(
      SCHEDULE, gamma=gamma, weight_decay=0.1, amplitude='adaptive'
  )
  grads = helpers.grads_sequence(dict_params, num_steps=NUM_STEPS)
  chained_updates, chained_params, _ = helpers.run_steps(
      chained, dict_params, grads
  )
  bort_a_updates, bort_a_params, _ = helpers.run_steps(
      bort_a, dict_params, grads
  )
  for step, (got, want) in enumerate(zip(chained_updates, bort_a_updates)):
    helpers.assert_trees_close(
        got, want, rtol=1e-5, atol=1e-7, err_msg=f'step {step}'
    )
  helpers.assert_trees_close(chained_params, bort_a_params, atol=1e-6)


def test_injected_gamma_can_be_changed_between_steps(dict_params, helpers):
  tx = optax.inject_hyperparams(
      lambda learning_rate, gamma: bort_jax.with_bort(
          optax.sgd(learning_rate), learning_rate=learning_rate, gamma=gamma
      )
  )(learning_rate=0.1, gamma=GAMMA)
  grads = helpers.random_like(dict_params, 1)
  state = tx.init(dict_params)
  state.hyperparams['gamma'] = jnp.zeros_like(state.hyperparams['gamma'])
  updates, _ = tx.update(grads, state, dict_params)
  plain, _ = optax.sgd(0.1).update(grads, optax.sgd(0.1).init(dict_params))
  helpers.assert_trees_close(updates, plain)


@pytest.mark.parametrize(
    'arguments, error, message',
    [
        (dict(optimizer=optax.adamw), TypeError, 'GradientTransformation'),
        (
            dict(learning_rate=-1e-3),
            ValueError,
            'learning_rate must be non-neg',
        ),
        (dict(gamma=float('nan')), ValueError, 'gamma must be finite'),
        (dict(split_axis=3), ValueError, 'split_axis must be a mesh axis'),
    ],
)
def test_bad_arguments_fail_at_construction(arguments, error, message):
  values = dict(optimizer=optax.sgd(1e-3), learning_rate=1e-3, gamma=1.0)
  values.update(arguments)
  optimizer = values.pop('optimizer')
  with pytest.raises(error, match=message):
    bort_jax.with_bort(optimizer, **values)


def test_update_without_params_raises_optax_message(dict_params):
  tx = bort_jax.add_decoupled_bort_correction(1e-3, 1.0)
  with pytest.raises(ValueError, match='params'):
    tx.update(dict_params, tx.init(dict_params))


# A small CNN on a few hundred real MNIST images: 28x28x1 -> 3x3 stride-2
# convs with 8 and 16 units -> a free (unconstrained) classifier.
TRAIN_IMAGES, EVAL_IMAGES, BATCH, EPOCHS = 384, 256, 64, 20
HEAD_FREE = bort_jax.kernels_except('^head/')


def _cnn_params():
  keys = jax.random.split(jax.random.key(0), 3)
  he = lambda k, shape: jax.random.normal(k, shape) * np.sqrt(
      2.0 / np.prod(shape[:-1])
  )
  return {
      'conv1': {'kernel': he(keys[0], (3, 3, 1, 8)), 'bias': jnp.zeros(8)},
      'conv2': {'kernel': he(keys[1], (3, 3, 8, 16)), 'bias': jnp.zeros(16)},
      'head': {'kernel': he(keys[2], (7 * 7 * 16, 10)), 'bias': jnp.zeros(10)},
  }


def _logits(params, images):
  hidden = images
  for name in ('conv1', 'conv2'):
    hidden = jax.lax.conv_general_dilated(
        hidden,
        params[name]['kernel'],
        window_strides=(2, 2),
        padding='SAME',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    )
    hidden = jax.nn.relu(hidden + params[name]['bias'])
  hidden = hidden.reshape(hidden.shape[0], -1)
  return hidden @ params['head']['kernel'] + params['head']['bias']


def _train(tx, images, labels):
  """Returns (final params, last loss) after EPOCHS passes in fixed batches."""

  def loss_fn(params, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(
        _logits(params, x), y
    ).mean()

  @jax.jit
  def epoch(params, state):
    def step(carry, batch):
      params, state = carry
      loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
      updates, state = tx.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), loss

    batches = (
        images.reshape(-1, BATCH, 28, 28, 1),
        labels.reshape(-1, BATCH),
    )
    (params, state), losses = jax.lax.scan(step, (params, state), batches)
    return params, state, losses[-1]

  params = _cnn_params()
  state = tx.init(params)
  for _ in range(EPOCHS):
    params, state, loss = epoch(params, state)
  return params, float(loss)


@pytest.fixture(scope='module')
def mnist_subset(mnist_idx_dir):
  from bort_jax.data import mnist_idx  # pylint: disable=import-outside-toplevel

  split = mnist_idx.load_mnist_split(mnist_idx_dir, 'test')
  images = jnp.asarray(split.images[: TRAIN_IMAGES + EVAL_IMAGES], jnp.float32)
  labels = jnp.asarray(split.labels[: TRAIN_IMAGES + EVAL_IMAGES], jnp.int32)
  images = images[..., None] / 255.0
  return (images[:TRAIN_IMAGES], labels[:TRAIN_IMAGES]), (
      images[TRAIN_IMAGES:],
      labels[TRAIN_IMAGES:],
  )


def test_mnist_cnn_chain_trains_like_bort_adamw(mnist_subset):
  (train_x, train_y), (eval_x, eval_y) = mnist_subset
  steps = EPOCHS * TRAIN_IMAGES // BATCH
  schedule = optax.cosine_decay_schedule(2e-3, steps)
  gamma, weight_decay = 30.0, 1e-4
  optimizers = {
      'chain': bort_jax.with_bort(
          optax.adamw(schedule, weight_decay=weight_decay),
          learning_rate=schedule,
          gamma=gamma,
          mask=HEAD_FREE,
      ),
      'bort_adamw': bort_jax.bort_adamw(
          schedule, gamma=gamma, weight_decay=weight_decay, mask=HEAD_FREE
      ),
      'adamw': optax.adamw(schedule, weight_decay=weight_decay),
      # The spelling the decoupled form replaces: +gamma * Delta after the
      # learning rate, with the wrong sign and no learning-rate scale.
      'naive': optax.chain(
          optax.adamw(schedule, weight_decay=weight_decay),
          bort_jax.add_bort_correction(gamma, mask=HEAD_FREE),
      ),
  }
  results = {}
  for name, tx in optimizers.items():
    params, loss = _train(tx, train_x, train_y)
    report = bort_jax.orthogonality_report(params, mask=HEAD_FREE)
    assert set(report) == {'conv1/kernel', 'conv2/kernel'}
    accuracy = float(
        jnp.mean(jnp.argmax(_logits(params, eval_x), -1) == eval_y)
    )
    error = float(bort_jax.summarize_report(report)['relative_error/max'])
    results[name] = dict(loss=loss, accuracy=accuracy, error=error)

  chain, bort_a, adamw = (
      results['chain'],
      results['bort_adamw'],
      results['adamw'],
  )
  assert chain['accuracy'] > 0.7, results
  assert abs(chain['accuracy'] - bort_a['accuracy']) <= 2 / EVAL_IMAGES, results
  assert abs(chain['error'] - bort_a['error']) <= 1e-3, results
  assert chain['error'] < 0.25 and adamw['error'] > 10 * chain['error'], results
  naive = results['naive']
  assert not np.isfinite(naive['loss']) or naive['error'] > 1.0, results


def test_split_axis_changes_nothing_on_one_device(dict_params, helpers):
  grads = helpers.grads_sequence(dict_params, num_steps=2)
  split, _, _ = helpers.run_steps(
      bort_jax.bort_adamw(1e-2, gamma=0.5, split_axis='data'),
      dict_params,
      grads,
  )
  whole, _, _ = helpers.run_steps(
      bort_jax.bort_adamw(1e-2, gamma=0.5), dict_params, grads
  )
  for got, want in zip(split, whole):
    helpers.assert_trees_close(got, want, rtol=0, atol=0)
