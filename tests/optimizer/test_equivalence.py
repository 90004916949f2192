"""bort_sgd / bort_adamw against an independent NumPy statement of BortS / BortA.

The oracle works in PyTorch orientation (``W = [out, fan_in]``, a conv weight
``[out, in, kh, kw]`` flattened to ``[out, in*kh*kw]``), in float64, following
the equations of shared/docs/bort.md §3-4 literally, so it also checks the
Flax layout mapping (output axis last, fan-in axes in another order).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import bort_jax

# ---------------------------------------------------------------- the oracle


def np_delta(w, mode, amplitude):
  """Δ(W) of shared/docs/bort.md §3, rows of ``w`` are output units."""
  if amplitude == 'adaptive':
    a = np.mean(np.linalg.norm(w, axis=1)) ** 2
  else:
    a = amplitude
  eye_out, eye_in = np.eye(w.shape[0]), np.eye(w.shape[1])
  row_gram, col_gram = w @ w.T, w.T @ w
  return {
      'l2-full': lambda: w @ w.T @ w - a * w,
      'l2-row': lambda: np.diag(np.diag(row_gram)) @ w - a * w,
      'l2-col': lambda: w @ np.diag(np.diag(col_gram)) - a * w,
      'l1-fullrow': lambda: np.sign(row_gram - a * eye_out) @ w,
      'l1-fullcol': lambda: w @ np.sign(col_gram - a * eye_in),
      'l1-row': lambda: (np.sign(row_gram - a * eye_out) * eye_out) @ w,
      'l1-col': lambda: w @ (np.sign(col_gram - a * eye_in) * eye_in),
  }[mode]()


class TorchLayout:
  """Flax kernel <-> torch weight matrix, for Dense (in, out) and Conv (kh, kw, in, out)."""

  @staticmethod
  def to_torch(kernel):
    kernel = np.asarray(kernel, np.float64)
    if kernel.ndim == 2:
      return kernel.T.copy()
    weight = kernel.transpose(3, 2, 0, 1)  # (out, in, kh, kw)
    return weight.reshape(weight.shape[0], -1)

  @staticmethod
  def to_flax(matrix, shape):
    if len(shape) == 2:
      return matrix.T
    kh, kw, cin, cout = shape
    return matrix.reshape(cout, cin, kh, kw).transpose(2, 3, 1, 0)


def official_borts(
    w, grads, *, lr, gamma, momentum, nesterov, weight_decay, mode, amplitude
):
  """Yields θ after each step of the official BortS update (torch orientation)."""
  buffer = None
  for g in grads:
    g = g + gamma * np_delta(w, mode, amplitude) + weight_decay * w
    if momentum:
      buffer = g.copy() if buffer is None else momentum * buffer + g
      g = g + momentum * buffer if nesterov else buffer
    w = w - lr * g
    yield w


def official_borta(
    w, grads, *, lr, gamma, b1, b2, eps, weight_decay, mode, amplitude
):
  """Yields θ after each step of the official BortA update (torch orientation)."""
  m = np.zeros_like(w)
  v = np.zeros_like(w)
  for t, g in enumerate(grads, start=1):
    w = w * (1 - lr * weight_decay)
    w = w - lr * gamma * np_delta(w, mode, amplitude)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
    w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
    yield w


# ---------------------------------------------------------------- helpers

KERNEL_SHAPES = {
    'dense_tall': (10, 4),  # fan_in > out: Gram on the output side
    'dense_wide': (3, 7),  # out > fan_in: Gram on the fan-in side
    'conv': (3, 3, 2, 5),
    'conv_wide': (2, 2, 1, 6),
}
NUM_STEPS = 6


def random_kernel_and_grads(shape, seed=0, scale=0.5):
  rng = np.random.default_rng(seed)
  kernel = rng.normal(size=shape) * scale / np.sqrt(np.prod(shape[:-1]))
  kernel *= 1.3  # start away from the constraint
  grads = [rng.normal(size=shape) * 0.1 for _ in range(NUM_STEPS)]
  return kernel.astype(np.float32), [g.astype(np.float32) for g in grads]


def run_optax(tx, kernel, grads):
  params = {'layer': {'kernel': jnp.asarray(kernel)}}
  state = tx.init(params)
  update = jax.jit(tx.update)
  for g in grads:
    updates, state = update(
        {'layer': {'kernel': jnp.asarray(g)}}, state, params
    )
    params = optax.apply_updates(params, updates)
    yield np.asarray(params['layer']['kernel'], np.float64)


def assert_trajectories_match(ours, reference, shape, rtol, atol):
  steps = 0
  for step, (got, want) in enumerate(zip(ours, reference)):
    np.testing.assert_allclose(
        got,
        TorchLayout.to_flax(want, shape),
        rtol=rtol,
        atol=atol,
        err_msg=f'step {step}',
    )
    steps += 1
  assert steps == NUM_STEPS


def official_trajectory(official, kernel, grads, **options):
  """``official`` from ``kernel`` with ``grads``, all in the torch layout."""
  return official(
      TorchLayout.to_torch(kernel),
      [TorchLayout.to_torch(g) for g in grads],
      **options,
  )


def assert_matches_official(optimizer, official, shape, hyper, seed, **options):
  """``optimizer`` (an optax Bort) follows ``official`` for ``NUM_STEPS`` steps
  from a random kernel: same hyperparameters ``hyper`` (``lr`` the learning
  rate) and ``options`` (mode, amplitude)."""
  kernel, grads = random_kernel_and_grads(shape, seed=seed)
  extra = {k: v for k, v in hyper.items() if k != 'lr'}
  tx = optimizer(hyper['lr'], **extra, **options)
  reference = official_trajectory(official, kernel, grads, **options, **hyper)
  assert_trajectories_match(
      run_optax(tx, kernel, grads), reference, shape, rtol=2e-5, atol=2e-6
  )


AMPLITUDES = [1.0, 0.5, 'adaptive']

# ---------------------------------------------------------------- correction


@pytest.mark.parametrize('shape_name', sorted(KERNEL_SHAPES))
@pytest.mark.parametrize('amplitude', AMPLITUDES)
@pytest.mark.parametrize('mode', bort_jax.MODES)
def test_correction_matches_table(mode, amplitude, shape_name):
  shape = KERNEL_SHAPES[shape_name]
  kernel, _ = random_kernel_and_grads(shape)
  got = bort_jax.bort_correction(
      jnp.asarray(kernel), amplitude=amplitude, mode=mode
  )
  want = TorchLayout.to_flax(
      np_delta(TorchLayout.to_torch(kernel), mode, amplitude), shape
  )
  assert got.shape == kernel.shape and got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float16])
def test_correction_of_low_precision_kernel_is_computed_in_float32(dtype):
  kernel, _ = random_kernel_and_grads((3, 3, 4, 8))
  low = jnp.asarray(kernel, dtype)
  got = bort_jax.bort_correction(low)
  want = TorchLayout.to_flax(
      np_delta(
          TorchLayout.to_torch(np.asarray(low.astype(jnp.float32))),
          'l2-full',
          1.0,
      ),
      kernel.shape,
  )
  assert got.dtype == dtype
  # Only the final rounding to `dtype` separates the two.
  np.testing.assert_allclose(
      np.asarray(got, np.float64),
      want,
      rtol=2 * jnp.finfo(dtype).eps,
      atol=1e-3 * np.abs(want).max(),
  )


# ---------------------------------------------------------------- BortS


SGD_CONFIGS = {
    'plain': dict(momentum=None, nesterov=False, weight_decay=0.0),
    'momentum': dict(momentum=0.9, nesterov=False, weight_decay=0.0),
    'nesterov_wd': dict(momentum=0.9, nesterov=True, weight_decay=5e-2),
    'wd': dict(momentum=None, nesterov=False, weight_decay=1e-1),
}


@pytest.mark.parametrize('config', sorted(SGD_CONFIGS))
@pytest.mark.parametrize('shape_name', ['dense_tall', 'dense_wide', 'conv'])
@pytest.mark.parametrize('amplitude', [1.0, 'adaptive'])
@pytest.mark.parametrize('mode', bort_jax.MODES)
def test_bort_sgd_matches_official_borts(mode, amplitude, shape_name, config):
  assert_matches_official(
      bort_jax.bort_sgd,
      official_borts,
      KERNEL_SHAPES[shape_name],
      dict(lr=0.1, gamma=0.7, **SGD_CONFIGS[config]),
      mode=mode,
      amplitude=amplitude,
      seed=1,
  )


# ---------------------------------------------------------------- BortA


@pytest.mark.parametrize('shape_name', ['dense_tall', 'dense_wide', 'conv'])
@pytest.mark.parametrize('amplitude', [1.0, 'adaptive'])
@pytest.mark.parametrize('mode', bort_jax.MODES)
def test_bort_adamw_matches_official_borta_without_decay(
    mode, amplitude, shape_name
):
  assert_matches_official(
      bort_jax.bort_adamw,
      official_borta,
      KERNEL_SHAPES[shape_name],
      dict(lr=0.05, gamma=0.8, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.0),
      mode=mode,
      amplitude=amplitude,
      seed=2,
  )


@pytest.mark.parametrize('weight_decay', [1e-2, 1e-1])
@pytest.mark.parametrize('mode', ['l2-full', 'l2-row', 'l2-col'])
def test_bort_adamw_with_decay_is_within_lr_times_wd_of_official(
    mode, weight_decay
):
  """Δ is evaluated on θ instead of θ(1 − ηλ): a difference of O(η²γλ) per step.

  Only for the smooth (l2) modes: an l1 mode's sign can flip between θ and
  θ(1 − ηλ), which is a jump, not an O(ηλ) difference.
  """
  shape = KERNEL_SHAPES['conv']
  kernel, grads = random_kernel_and_grads(shape, seed=3)
  hyper = dict(
      lr=0.05, gamma=0.8, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay
  )
  tx = bort_jax.bort_adamw(
      hyper['lr'], gamma=hyper['gamma'], weight_decay=weight_decay, mode=mode
  )
  ours = list(run_optax(tx, kernel, grads))
  reference = [
      TorchLayout.to_flax(w, shape)
      for w in official_trajectory(
          official_borta, kernel, grads, mode=mode, amplitude=1.0, **hyper
      )
  ]
  scale = hyper['lr'] * weight_decay
  for step, (got, want) in enumerate(zip(ours, reference), start=1):
    gap = np.abs(got - want).max()
    assert gap <= step * scale * np.abs(want).max(), (step, gap)
  # And the gap is real (the two orders differ): the tolerance is not vacuous.
  if mode == 'l2-full':
    assert np.abs(ours[-1] - reference[-1]).max() > 1e-8


# ---------------------------------------------------------------- convergence


def run_zero_gradient(tx, params, steps):
  state = tx.init(params)

  def body(_, carry):
    params, state = carry
    updates, state = tx.update(
        jax.tree.map(jnp.zeros_like, params), state, params
    )
    return optax.apply_updates(params, updates), state

  return jax.jit(lambda p, s: jax.lax.fori_loop(0, steps, body, (p, s)))(
      params, state
  )[0]


@pytest.mark.parametrize(
    'optimizer',
    [
        functools.partial(bort_jax.bort_sgd, 0.1, gamma=1.0),
        functools.partial(
            bort_jax.bort_adamw, 0.1, gamma=1.0, weight_decay=0.0
        ),
    ],
    ids=['bort_sgd', 'bort_adamw'],
)
def test_official_unit_test_setting_converges(optimizer):
  """Dense 6→2, zero task gradient, lr 0.1, gamma 1, 10,000 steps: MᵀM ≈ I."""
  kernel = jax.random.normal(jax.random.key(0), (6, 2))
  final = run_zero_gradient(optimizer(), {'dense': {'kernel': kernel}}, 10_000)
  m = final['dense']['kernel']
  assert np.abs(np.asarray(m.T @ m) - np.eye(2)).max() < 1e-3
  assert np.abs(np.asarray(kernel.T @ kernel) - np.eye(2)).max() > 0.1


@pytest.mark.parametrize('shape', [(8, 3), (3, 8), (3, 3, 2, 4)])
def test_half_step_converges_to_polar_factor(shape):
  """lr·gamma = ½, a = 1: Newton–Schulz iterations to the polar factor U Vᵀ."""
  rng = np.random.default_rng(4)
  kernel = rng.normal(size=shape)
  matrix = kernel.reshape(-1, shape[-1])
  u, s, vt = np.linalg.svd(matrix, full_matrices=False)
  matrix = matrix * (1.2 / s.max())  # singular values inside (0, √3)
  polar = (u @ vt).reshape(shape)
  tx = bort_jax.bort_sgd(0.25, gamma=2.0)
  final = run_zero_gradient(
      tx, {'k': {'kernel': jnp.asarray(matrix.reshape(shape), jnp.float32)}}, 60
  )
  np.testing.assert_allclose(final['k']['kernel'], polar, atol=1e-5)
