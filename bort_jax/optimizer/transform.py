r"""Bort as optax gradient transformations.

:func:`add_bort_correction` adds :math:`\gamma\,\Delta(\theta)` to the incoming
updates for the kernels Bort constrains; chained before
``optax.scale_by_learning_rate`` it gives the step
:math:`\theta \leftarrow \theta - \eta(\dots + \gamma \Delta(\theta))`.
:func:`bort_sgd` and :func:`bort_adamw` are the official BortS / BortA.
"""

from __future__ import annotations

import collections
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax
from optax._src import base as optax_base

from bort_jax.optimizer import correction
from bort_jax.optimizer import layout
from bort_jax.optimizer import masking
from bort_jax.optimizer import placement

ScalarOrSchedule = optax.ScalarOrSchedule


class AddBortCorrectionState(NamedTuple):
  """State of :func:`add_bort_correction` when ``gamma`` is a schedule."""

  count: chex.Array  # number of updates done, the schedule's argument


def _check_gamma(gamma: ScalarOrSchedule) -> None:
  if callable(gamma):
    return
  if gamma is None:
    raise ValueError(
        'gamma must be a non-negative number or a schedule, got None.'
    )
  value = correction.concrete_scalar(gamma, 'gamma')
  if value is not None and value < 0:
    raise ValueError(f'gamma must be non-negative, got {gamma!r}.')


def grouped_corrections(
    kernels: list[chex.Array],
    dimension_numbers: list[layout.BortDimensionNumbers],
    *,
    amplitude: correction.Amplitude,
    mode: correction.Mode,
    precision: jax.lax.PrecisionLike = None,
    batch_kernels: bool = True,
) -> list[chex.Array]:
  r""":math:`\Delta` for many kernels, batched where that moves no data.

  With ``batch_kernels``, kernels whose matrices ``[fan_in, out]`` have equal
  shapes and dtypes (ResNet stages, transformer blocks) *and* the same
  placement are stacked and corrected together, so the device runs a few
  large batched matmuls rather than a pair of small ones per kernel. The same
  placement means: the computation runs on one device, or the kernels have the
  same ``PartitionSpec`` over an explicit-axes mesh. Kernels whose sharding
  the compiler chooses (auto mesh axes, not visible while tracing) are
  corrected one by one, so that each keeps its own sharding. Without
  ``batch_kernels`` every kernel is corrected on its own.

  Under an explicit-axes mesh a sharded kernel is replicated for its
  correction and :math:`\Delta` is resharded to the kernel's own
  ``PartitionSpec`` (see :mod:`bort_jax.optimizer.placement`). Matrices are
  computed in at least float32.

  Returns:
    One :math:`\Delta` per kernel, in the kernel's shape and sharding, in the
    compute dtype.
  """
  specs = [placement.explicit_spec(k) for k in kernels]
  matrices = [
      layout.to_matrices(
          placement.to_replicated(k.astype(correction.compute_dtype(k.dtype))),
          dn,
      )
      for k, dn in zip(kernels, dimension_numbers)
  ]
  groups = collections.defaultdict(list)
  for position, (kernel, m) in enumerate(zip(kernels, matrices)):
    where = placement.placement_key(kernel) if batch_kernels else None
    key = (m.shape[1:], m.dtype, where) if where is not None else position
    groups[key].append(position)

  deltas: list[Any] = [None] * len(kernels)
  for positions in groups.values():
    stacked = (
        jnp.concatenate([matrices[p] for p in positions])
        if len(positions) > 1
        else (matrices[positions[0]])
    )
    delta = correction.matrix_correction(
        stacked, amplitude=amplitude, mode=mode, precision=precision
    )
    offset = 0
    for p in positions:
      size = matrices[p].shape[0]
      deltas[p] = placement.to_sharding(
          layout.from_matrices(
              delta[offset : offset + size],
              kernels[p].shape,
              dimension_numbers[p],
          ),
          specs[p],
      )
      offset += size
  return deltas


def add_bort_correction(
    gamma: ScalarOrSchedule,
    *,
    amplitude: correction.Amplitude = 1.0,
    mode: correction.Mode = 'l2-full',
    mask: masking.MaskOrFn | None = None,
    dimension_numbers: masking.DimensionNumbersOrFn | None = None,
    precision: jax.lax.PrecisionLike = None,
    batch_kernels: bool = True,
) -> optax.GradientTransformationExtraArgs:
  r"""Adds Bort's bounded-orthogonality term to the updates.

  For every selected kernel, read as matrices ``M`` with output units in the
  columns (see :class:`BortDimensionNumbers`),

  .. math::
    u \leftarrow u + \gamma_t\, \Delta(M), \qquad
    \Delta(M) = M M^\top M - a M \quad (\text{mode } \texttt{l2-full}),

  the gradient of :math:`\tfrac14\lVert M^\top M - aI\rVert_F^2`. Followed by
  ``optax.scale_by_learning_rate(lr)`` a constraint-only step is the Parseval
  retraction :math:`M \leftarrow M - \eta\gamma\Delta(M)`, which drives every
  singular value of ``M`` to :math:`\sqrt a`. Corrections are computed in at
  least float32.

  Sharding: under an explicit-axes mesh (``jax.set_mesh``) a sharded kernel
  is replicated for its correction (an all-gather, and each device computes
  the whole correction) and :math:`\Delta` is resharded to the kernel's own
  ``PartitionSpec``; updates, params and optimizer state keep their shardings.

  Where users trip:

  * Stacked kernels. Layers made with ``nnx.vmap``, ``nnx.scan`` or
    ``nn.scan`` keep one kernel per layer along a leading axis, ``(L, in,
    out)``; by default that is read as *one* ``(L*in) x out`` matrix. Pass
    ``dimension_numbers=stacked_dimension_numbers('^layers/')`` (or
    ``BortDimensionNumbers(batch_axis=0)``) to constrain each layer's matrix.
  * ``optax.inject_hyperparams`` calls every callable argument with the step
    count, as a schedule: a mask or dimension-numbers *function* must be named
    in ``static_args``: ``optax.inject_hyperparams(bort_adamw,
    static_args=('mask', 'dimension_numbers'))(...)``.
  * ``amplitude='adaptive'`` shrinks overcomplete matrices (more output units
    than fan-in, ``d > n``). Such an ``M`` has rank at most ``n``, so the
    retraction can only reach :math:`M M^\top = aI_n`; then the squared unit
    norms sum to :math:`\operatorname{tr}(M^\top M) = na` and, by
    Cauchy-Schwarz, the next amplitude :math:`(\frac1d\sum_j\lVert m_j
    \rVert)^2 \le \frac1d\sum_j\lVert m_j\rVert^2 = \frac nd a`: every
    re-estimate lowers the target by at least the factor ``n/d`` and the
    weights decay towards zero. For ``d <= n`` the fixed point
    :math:`M^\top M = aI_d` keeps every unit norm at :math:`\sqrt a` and ``a``
    is stable. Use a fixed amplitude for overcomplete layers, or leave them out
    of the mask.
  * Complex kernels are only selected by an explicit mask; the ``l2`` modes use
    the conjugate transpose, ``l1`` modes reject them.

  Args:
    gamma: non-negative Bort coefficient :math:`\gamma`, or an optax schedule
      of the step count.
    amplitude: target squared norm ``a`` of each output unit, or
      ``"adaptive"``: the squared mean norm of the output units, recomputed
      from the current weights (on device) at every step.
    mode: one of ``l2-full`` (the ICLR method), ``l2-row``, ``l2-col``,
      ``l1-fullrow``, ``l1-fullcol``, ``l1-row``, ``l1-col``.
    mask: which leaves to constrain: a pytree of bools with the structure of
      the params, or a callable ``params -> mask``. Defaults to
      :func:`default_mask` (floating Dense/Conv/attention kernels). Integer
      leaves are never constrained.
    dimension_numbers: how each kernel is read as matrices: one
      :class:`BortDimensionNumbers` for all, a pytree of them, or a callable
      ``params -> pytree``. Defaults to :func:`default_dimension_numbers`
      (output axis last; ``(1, 2)`` for attention query/key/value kernels).
    precision: precision of the correction's matmuls (``None``: JAX default).
    batch_kernels: correct kernels of equal matrix shape in one batched
      computation (fewer, larger matmuls) where that moves no data: on one
      device, or for kernels with the same ``PartitionSpec`` over an
      explicit-axes mesh. Kernels whose sharding the compiler picks (auto mesh
      axes) are corrected one by one, so each keeps its own sharding. On by
      default (an H100 DeiT-S step: 26.91 ms batched, 29.30 ms one by one);
      ``False`` corrects every kernel on its own.

  Returns:
    An ``optax.GradientTransformationExtraArgs``. Its ``update`` requires
    ``params``. It keeps no state unless ``gamma`` is a schedule.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> tx = optax.chain(optax.scale_by_lion(), add_bort_correction(1e-2),
    ...                  optax.scale_by_learning_rate(1e-3))
    >>> params = {'dense': {'kernel': jnp.ones((4, 3)), 'bias': jnp.zeros(3)}}
    >>> state = tx.init(params)
    >>> updates, state = tx.update(params, state, params)
  """
  _check_gamma(gamma)
  correction.check_amplitude(amplitude)
  correction.check_mode(mode)
  masking.check_mask_argument(mask)
  masking.check_dimension_numbers_argument(dimension_numbers)
  is_schedule = callable(gamma)

  def check_selected(params):
    leaves, _, selected = masking.select_leaves(params, mask, dimension_numbers)
    for s in selected:
      correction.check_complex_mode(mode, leaves[s.index].dtype, s.path)
    return leaves, selected

  def init_fn(params):
    check_selected(
        params
    )  # a mask or dimension numbers that do not fit fail here
    if is_schedule:
      return AddBortCorrectionState(count=jnp.zeros([], jnp.int32))
    return optax.EmptyState()

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError(optax_base.NO_PARAMS_MSG)
    if is_schedule:
      coefficient = gamma(state.count)
      state = AddBortCorrectionState(count=optax.safe_increment(state.count))
    else:
      coefficient = gamma
    leaves, selected = check_selected(params)
    if not selected:
      return updates, state
    treedef = jax.tree_util.tree_structure(params)
    update_leaves = treedef.flatten_up_to(updates)
    deltas = grouped_corrections(
        [leaves[s.index] for s in selected],
        [s.dimension_numbers for s in selected],
        amplitude=amplitude,
        mode=mode,
        precision=precision,
        batch_kernels=batch_kernels,
    )
    for s, delta in zip(selected, deltas):
      update = update_leaves[s.index]
      delta = placement.to_sharding(delta, placement.explicit_spec(update))
      update_leaves[s.index] = (update + coefficient * delta).astype(
          update.dtype
      )
    return treedef.unflatten(update_leaves), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def bort_sgd(
    learning_rate: ScalarOrSchedule,
    *,
    gamma: ScalarOrSchedule,
    momentum: float | None = None,
    nesterov: bool = False,
    weight_decay: ScalarOrSchedule = 0.0,
    amplitude: correction.Amplitude = 1.0,
    mode: correction.Mode = 'l2-full',
    mask: masking.MaskOrFn | None = None,
    dimension_numbers: masking.DimensionNumbersOrFn | None = None,
    weight_decay_mask: Any = None,
    accumulator_dtype: Any = None,
    precision: jax.lax.PrecisionLike = None,
    batch_kernels: bool = True,
) -> optax.GradientTransformationExtraArgs:
  r"""BortS: SGD with the Bort term coupled to the gradient.

  The official BortS update, with :math:`\mu` the momentum (dampening 0):

  .. math::
    g &\leftarrow g + \gamma\Delta(\theta) + \lambda\theta \\
    b &\leftarrow \mu b + g \quad (b_0 = g) \\
    \theta &\leftarrow \theta - \eta\,(g + \mu b \text{ if Nesterov else } b)

  The correction and the weight decay join the gradient before momentum, so
  momentum accumulates them too.

  Args:
    learning_rate: :math:`\eta`, a float or an optax schedule.
    gamma: Bort coefficient :math:`\gamma` (float or schedule).
    momentum: :math:`\mu`; ``None`` for plain SGD.
    nesterov: Nesterov momentum.
    weight_decay: L2 coefficient :math:`\lambda` added to the gradient.
    amplitude: ``a`` (positive float) or ``"adaptive"``.
    mode: Bort mode, see :func:`add_bort_correction`.
    mask: leaves Bort constrains (default: Dense/Conv/attention kernels).
    dimension_numbers: how kernels are read as matrices.
    weight_decay_mask: leaves weight decay applies to (``None``: all leaves,
      as in PyTorch and ``optax.sgd``; pass :func:`default_mask` to decay only
      the constrained kernels).
    accumulator_dtype: dtype of the momentum buffer (``None``: the params').
    precision: precision of the correction's matmuls.
    batch_kernels: see :func:`add_bort_correction`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` requires params.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> tx = bort_sgd(0.1, gamma=0.05, momentum=0.9, weight_decay=5e-4)
    >>> params = {'kernel': jax.random.normal(jax.random.key(0), (6, 2))}
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
  """
  return optax.chain(
      add_bort_correction(
          gamma,
          amplitude=amplitude,
          mode=mode,
          mask=mask,
          dimension_numbers=dimension_numbers,
          precision=precision,
          batch_kernels=batch_kernels,
      ),
      optax.add_decayed_weights(weight_decay, weight_decay_mask),
      (
          optax.trace(
              decay=momentum,
              nesterov=nesterov,
              accumulator_dtype=accumulator_dtype,
          )
          if momentum is not None
          else optax.identity()
      ),
      optax.scale_by_learning_rate(learning_rate),
  )


def bort_adamw(
    learning_rate: ScalarOrSchedule,
    *,
    gamma: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: ScalarOrSchedule = 1e-2,
    amplitude: correction.Amplitude = 1.0,
    mode: correction.Mode = 'l2-full',
    mask: masking.MaskOrFn | None = None,
    dimension_numbers: masking.DimensionNumbersOrFn | None = None,
    weight_decay_mask: Any = None,
    mu_dtype: Any = None,
    precision: jax.lax.PrecisionLike = None,
    batch_kernels: bool = True,
) -> optax.GradientTransformationExtraArgs:
  r"""BortA: AdamW with the Bort term decoupled, like AdamW's weight decay.

  Adam's moments see only the task gradient; decay and correction are applied
  outside Adam's normalisation and scaled by the learning rate:

  .. math::
    m &\leftarrow \beta_1 m + (1-\beta_1) g, \quad
    v \leftarrow \beta_2 v + (1-\beta_2) g^2 \\
    \theta &\leftarrow \theta - \eta\,\bigl(\hat m / (\sqrt{\hat v} + \epsilon)
      + \lambda\theta + \gamma\Delta(\theta)\bigr)

  The official code evaluates :math:`\Delta` on the already decayed weights
  :math:`\theta(1-\eta\lambda)`; here it is evaluated on :math:`\theta`, which
  is identical for :math:`\lambda = 0` and differs by
  :math:`O(\eta^2\gamma\lambda)` otherwise.

  Args:
    learning_rate: :math:`\eta`, a float or an optax schedule.
    gamma: Bort coefficient :math:`\gamma` (float or schedule).
    b1, b2, eps, eps_root: Adam's parameters (``optax.scale_by_adam``).
    weight_decay: decoupled decay :math:`\lambda` (default 1e-2, PyTorch's
      AdamW and BortA default).
    amplitude: ``a`` (positive float) or ``"adaptive"``.
    mode: Bort mode, see :func:`add_bort_correction`.
    mask: leaves Bort constrains (default: Dense/Conv/attention kernels).
    dimension_numbers: how kernels are read as matrices.
    weight_decay_mask: leaves weight decay applies to (``None``: all leaves,
      as in PyTorch and ``optax.adamw``).
    mu_dtype: dtype of Adam's first moment.
    precision: precision of the correction's matmuls.
    batch_kernels: see :func:`add_bort_correction`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` requires params.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> tx = optax.inject_hyperparams(bort_adamw)(learning_rate=1e-3, gamma=1e-4,
    ...                                           amplitude='adaptive')
    >>> params = {'conv': {'kernel': jnp.ones((3, 3, 4, 8)) * 0.1}}
    >>> state = tx.init(params)
    >>> state.hyperparams['gamma'] = 0.0  # switch Bort off mid-training
  """
  return optax.chain(
      optax.scale_by_adam(
          b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype
      ),
      optax.add_decayed_weights(weight_decay, weight_decay_mask),
      add_bort_correction(
          gamma,
          amplitude=amplitude,
          mode=mode,
          mask=mask,
          dimension_numbers=dimension_numbers,
          precision=precision,
          batch_kernels=batch_kernels,
      ),
      optax.scale_by_learning_rate(learning_rate),
  )
