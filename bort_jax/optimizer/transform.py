r"""Bort as optax gradient transformations.

:func:`add_bort_correction` adds :math:`\gamma\,\Delta(\theta)` to the incoming
updates for the kernels Bort constrains; chained before
``optax.scale_by_learning_rate`` it gives the step
:math:`\theta \leftarrow \theta - \eta(\dots + \gamma \Delta(\theta))`.
:func:`bort_sgd` and :func:`bort_adamw` are the official BortS / BortA.
:func:`add_decoupled_bort_correction` (and :func:`with_bort`, which chains it
after a complete optimizer) adds the decoupled step
:math:`-\eta\gamma\Delta(\theta)` after any optax optimizer.
"""

from __future__ import annotations

import collections
import functools
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec
from optax._src import base as optax_base

from bort_jax.optimizer import correction
from bort_jax.optimizer import layout
from bort_jax.optimizer import masking
from bort_jax.optimizer import placement

ScalarOrSchedule = optax.ScalarOrSchedule


class AddBortCorrectionState(NamedTuple):
  """State of the Bort transformations when a coefficient is a schedule."""

  count: chex.Array  # number of updates done, the schedule's argument


def _check_coefficient(value: ScalarOrSchedule, name: str) -> None:
  """Raises ``ValueError`` unless ``value`` is a non-negative number or schedule."""
  if callable(value):
    return
  if value is None:
    raise ValueError(
        f'{name} must be a non-negative number or a schedule, got None.'
    )
  number = correction.concrete_scalar(value, name)
  if number is not None and number < 0:
    raise ValueError(f'{name} must be non-negative, got {value!r}.')


def _stacked_correction(
    kernels: list[chex.Array],
    dimension_numbers: list[layout.BortDimensionNumbers],
    *,
    amplitude: correction.Amplitude,
    mode: correction.Mode,
    precision: jax.lax.PrecisionLike,
    split_axis: str | tuple[str, ...] | None,
) -> list[chex.Array]:
  r""":math:`\Delta` of kernels stacked into one ``[B, fan_in, out]`` batch.

  With ``split_axis`` (and a mesh of more than one device) the stack is
  constrained to be sharded over that axis along the side its Gram matrix
  contracts, so each device computes its share of every kernel's correction,
  and the result is gathered (constrained to be replicated).
  """
  matrices = [
      layout.to_matrices(k.astype(correction.compute_dtype(k.dtype)), dn)
      for k, dn in zip(kernels, dimension_numbers)
  ]
  stacked = jnp.concatenate(matrices) if len(matrices) > 1 else matrices[0]
  mesh = placement.kernel_mesh(stacked) if split_axis is not None else None
  if mesh is not None:
    n, d = stacked.shape[-2:]
    stacked = placement.constrain(
        stacked,
        mesh,
        placement.split_spec(mesh, split_axis, 3, 1 if d <= n else 2),
    )
  delta = correction.matrix_correction(
      stacked, amplitude=amplitude, mode=mode, precision=precision
  )
  if mesh is not None:
    delta = placement.constrain(delta, mesh, PartitionSpec())
  deltas, offset = [], 0
  for kernel, m, dn in zip(kernels, matrices, dimension_numbers):
    size = m.shape[0]
    deltas.append(
        layout.from_matrices(delta[offset : offset + size], kernel.shape, dn)
    )
    offset += size
  return deltas


def grouped_corrections(
    kernels: list[chex.Array],
    dimension_numbers: list[layout.BortDimensionNumbers],
    *,
    amplitude: correction.Amplitude,
    mode: correction.Mode,
    precision: jax.lax.PrecisionLike = None,
    batch_kernels: bool | None = None,
    split_axis: str | tuple[str, ...] | None = None,
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
  ``batch_kernels`` every kernel is corrected on its own; ``None`` batches
  unless JAX's default backend is the CPU.

  Under an explicit-axes mesh the correction is computed with the compiler
  choosing shardings (:func:`jax.sharding.auto_axes`), as under auto axes: a
  kernel sharded over ``k`` devices costs each of them about ``1/k`` of its
  correction, and :math:`\Delta` comes back in the kernel's own
  ``PartitionSpec``. ``split_axis`` spreads the correction of kernels that
  are replicated (every kernel under auto axes, where shardings are not
  known while tracing) over that mesh axis. Matrices are computed in at least
  float32.

  Returns:
    One :math:`\Delta` per kernel, in the kernel's shape and sharding, in the
    compute dtype.
  """
  if batch_kernels is None:
    batch_kernels = jax.default_backend() != 'cpu'
  specs = [placement.explicit_spec(k) for k in kernels]
  shapes = [
      (layout.matrix_shape(k.shape, dn)[1:], correction.compute_dtype(k.dtype))
      for k, dn in zip(kernels, dimension_numbers)
  ]
  groups = collections.defaultdict(list)
  for position, (kernel, shape) in enumerate(zip(kernels, shapes)):
    where = placement.placement_key(kernel) if batch_kernels else None
    key = (shape, where) if where is not None else position
    groups[key].append(position)

  deltas: list[Any] = [None] * len(kernels)
  for positions in groups.values():
    spec = specs[positions[0]]
    split = split_axis if spec is None or not any(spec) else None
    compute = functools.partial(
        _stacked_correction,
        dimension_numbers=[dimension_numbers[p] for p in positions],
        amplitude=amplitude,
        mode=mode,
        precision=precision,
        split_axis=split,
    )
    group_deltas = placement.on_own_shardings(
        compute, [kernels[p] for p in positions], [specs[p] for p in positions]
    )
    for p, delta in zip(positions, group_deltas):
      deltas[p] = delta
  return deltas


def _check_options(amplitude, mode, mask, dimension_numbers, split_axis):
  """Checks what can be checked at construction; returns the params check."""
  correction.check_amplitude(amplitude)
  correction.check_mode(mode)
  masking.check_mask_argument(mask)
  masking.check_dimension_numbers_argument(dimension_numbers)
  placement.check_split_axis(split_axis)

  def check_selected(params):
    leaves, _, selected = masking.select_leaves(params, mask, dimension_numbers)
    for s in selected:
      correction.check_complex_mode(mode, leaves[s.index].dtype, s.path)
    return leaves, selected

  return check_selected


def _add_scaled_corrections(
    updates,
    params,
    coefficient,
    *,
    check,
    amplitude,
    mode,
    precision,
    batch_kernels,
    split_axis,
):
  """``updates + coefficient * Delta(params)`` on the selected kernels."""
  leaves, selected = check(params)
  if not selected:
    return updates
  treedef = jax.tree_util.tree_structure(params)
  update_leaves = treedef.flatten_up_to(updates)
  deltas = grouped_corrections(
      [leaves[s.index] for s in selected],
      [s.dimension_numbers for s in selected],
      amplitude=amplitude,
      mode=mode,
      precision=precision,
      batch_kernels=batch_kernels,
      split_axis=split_axis,
  )
  for s, delta in zip(selected, deltas):
    update = update_leaves[s.index]
    delta = placement.to_sharding(delta, placement.explicit_spec(update))
    update_leaves[s.index] = (update + coefficient * delta).astype(update.dtype)
  return treedef.unflatten(update_leaves)


def add_bort_correction(
    gamma: ScalarOrSchedule,
    *,
    amplitude: correction.Amplitude = 1.0,
    mode: correction.Mode = 'l2-full',
    mask: masking.MaskOrFn | None = None,
    dimension_numbers: masking.DimensionNumbersOrFn | None = None,
    precision: jax.lax.PrecisionLike = None,
    batch_kernels: bool | None = None,
    split_axis: str | tuple[str, ...] | None = None,
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

  Where it goes: *before* the learning-rate scaling (where the optimizer adds
  its weight decay: after ``scale_by_adam`` / ``scale_by_lion``, before
  ``trace`` for coupled SGD). Chained *after* a complete optimizer such as
  ``optax.adamw(lr)``, whose updates already carry :math:`-\eta`, it would
  add :math:`+\gamma\Delta` with the wrong sign and no learning rate, and
  training diverges; use :func:`with_bort` or
  :func:`add_decoupled_bort_correction` there. Either way the effective step
  on the constraint is :math:`\eta\gamma`: near the target, a singular value
  :math:`s` of ``M`` moves as :math:`s - \sqrt a \leftarrow (1 -
  2\eta\gamma a)(s - \sqrt a)`, so choose :math:`\gamma` with
  :math:`\eta\gamma a` well below 1/2 (above 1 the retraction diverges);
  the constraint then settles in about :math:`1/(2\eta\gamma a)` steps.

  Sharding: updates, params and optimizer state keep their shardings. A
  sharded kernel's correction is computed sharded, each of the ``k`` devices
  holding it doing about ``1/k`` of the work, under auto axes and under
  explicit axes (``jax.set_mesh``; there through
  :func:`jax.sharding.auto_axes`). Replicated kernels (data parallelism) are
  corrected whole on every device unless ``split_axis`` names a mesh axis to
  split their corrections over.

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
      axes) are corrected one by one, so each keeps its own sharding.
      ``None`` (default): batched on GPU and TPU (an H100 DeiT-S step: 26.91
      ms batched, 29.30 ms one by one), one by one on CPU, where a batched
      matmul runs as its matrices one after another and stacking only adds
      a copy of every kernel (a ResNet-50 update reads and writes 2.24 GB
      batched, 1.55 GB one by one). ``True`` / ``False`` force either.
    split_axis: a mesh axis name (or tuple of names) to split the corrections
      of replicated kernels over: each kernel's matrix is sharded over the
      axis along the side its Gram matrix contracts, each device computes its
      share (the partial Gram matrices are summed across the axis) and the
      result is gathered, so a device does about ``1/N`` of every kernel's
      correction for ``N`` devices on the axis, for one all-reduce of the
      small Gram matrix and one all-gather of :math:`\Delta` per kernel.
      Under explicit axes only replicated kernels are split (sharded ones are
      corrected on their own sharding); under auto axes, where shardings are
      not known while tracing, every kernel is, so use it for replicated
      params. No effect on one device. ``None`` (default): no split.

  Returns:
    An ``optax.GradientTransformationExtraArgs``. Its ``update`` requires
    ``params``. It keeps no state unless ``gamma`` is a schedule.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from bort_jax import add_bort_correction
    >>> tx = optax.chain(optax.scale_by_lion(), add_bort_correction(1e-2),
    ...                  optax.scale_by_learning_rate(1e-3))
    >>> params = {'dense': {'kernel': jnp.ones((4, 3)), 'bias': jnp.zeros(3)}}
    >>> state = tx.init(params)
    >>> updates, state = tx.update(params, state, params)
  """
  check = _check_options(amplitude, mode, mask, dimension_numbers, split_axis)
  _check_coefficient(gamma, 'gamma')
  is_schedule = callable(gamma)

  def init_fn(params):
    check(params)  # a mask or dimension numbers that do not fit fail here
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
    updates = _add_scaled_corrections(
        updates,
        params,
        coefficient,
        check=check,
        amplitude=amplitude,
        mode=mode,
        precision=precision,
        batch_kernels=batch_kernels,
        split_axis=split_axis,
    )
    return updates, state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def add_decoupled_bort_correction(
    learning_rate: ScalarOrSchedule,
    gamma: ScalarOrSchedule,
    *,
    amplitude: correction.Amplitude = 1.0,
    mode: correction.Mode = 'l2-full',
    mask: masking.MaskOrFn | None = None,
    dimension_numbers: masking.DimensionNumbersOrFn | None = None,
    precision: jax.lax.PrecisionLike = None,
    batch_kernels: bool | None = None,
    split_axis: str | tuple[str, ...] | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Bort's term, decoupled, for the end of a chain after a whole optimizer.

  The updates a complete optimizer returns are already steps (they carry
  :math:`-\eta_t`), so this transformation adds the constraint's own step,
  scaled by the same learning rate:

  .. math::
    u \leftarrow u - \eta_t\,\gamma_t\,\Delta(\theta).

  After ``optax.adamw(lr, weight_decay=wd)`` this is exactly
  :func:`bort_adamw` (BortA): the correction is decoupled like AdamW's weight
  decay, outside Adam's normalisation. After any other optimizer (SGD, Lion,
  Adafactor, Muon, ...) it is that optimizer's step plus the Parseval
  retraction :math:`\theta \leftarrow \theta - \eta\gamma\Delta(\theta)`.
  The effective step on the constraint is :math:`\eta\gamma`; see
  :func:`add_bort_correction` for how to choose :math:`\gamma`.

  Pass the optimizer's learning rate or schedule: this transformation counts
  its own updates, so a schedule is evaluated at the same step as in the
  optimizer (also inside ``optax.MultiSteps`` and ``optax.apply_if_finite``,
  which skip the whole chain together). :func:`with_bort` chains it for you.

  Args:
    learning_rate: :math:`\eta`, a non-negative float or an optax schedule,
      the same as the optimizer's.
    gamma: non-negative Bort coefficient :math:`\gamma`, or a schedule.
    amplitude: ``a`` (positive float) or ``"adaptive"``.
    mode: Bort mode, see :func:`add_bort_correction`.
    mask: leaves Bort constrains (default: Dense/Conv/attention kernels).
    dimension_numbers: how kernels are read as matrices.
    precision: precision of the correction's matmuls.
    batch_kernels: see :func:`add_bort_correction`.
    split_axis: see :func:`add_bort_correction`.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` requires
    ``params``; its state counts updates when ``learning_rate`` or ``gamma``
    is a schedule.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from bort_jax import add_decoupled_bort_correction
    >>> schedule = optax.cosine_decay_schedule(1e-3, 1000)
    >>> tx = optax.chain(optax.lion(schedule),
    ...                  add_decoupled_bort_correction(schedule, gamma=10.0))
    >>> params = {'dense': {'kernel': jnp.ones((4, 3)), 'bias': jnp.zeros(3)}}
    >>> updates, state = tx.update(params, tx.init(params), params)
  """
  check = _check_options(amplitude, mode, mask, dimension_numbers, split_axis)
  _check_coefficient(learning_rate, 'learning_rate')
  _check_coefficient(gamma, 'gamma')
  is_schedule = callable(learning_rate) or callable(gamma)
  at = lambda value, count: value(count) if callable(value) else value

  def init_fn(params):
    check(params)
    if is_schedule:
      return AddBortCorrectionState(count=jnp.zeros([], jnp.int32))
    return optax.EmptyState()

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError(optax_base.NO_PARAMS_MSG)
    count = state.count if is_schedule else None
    coefficient = -at(learning_rate, count) * at(gamma, count)
    if is_schedule:
      state = AddBortCorrectionState(count=optax.safe_increment(state.count))
    updates = _add_scaled_corrections(
        updates,
        params,
        coefficient,
        check=check,
        amplitude=amplitude,
        mode=mode,
        precision=precision,
        batch_kernels=batch_kernels,
        split_axis=split_axis,
    )
    return updates, state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def with_bort(
    optimizer: optax.GradientTransformation,
    *,
    learning_rate: ScalarOrSchedule,
    gamma: ScalarOrSchedule,
    amplitude: correction.Amplitude = 1.0,
    mode: correction.Mode = 'l2-full',
    mask: masking.MaskOrFn | None = None,
    dimension_numbers: masking.DimensionNumbersOrFn | None = None,
    precision: jax.lax.PrecisionLike = None,
    batch_kernels: bool | None = None,
    split_axis: str | tuple[str, ...] | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""``optimizer`` followed by Bort's decoupled term: any optax optimizer + Bort.

  .. math::
    \theta \leftarrow \theta + \mathrm{optimizer}(g) - \eta_t\gamma_t
      \Delta(\theta)

  ``optax.chain(optimizer, add_decoupled_bort_correction(learning_rate,
  gamma, ...))``; see :func:`add_decoupled_bort_correction`. With
  ``optax.adamw`` it is :func:`bort_adamw`. It can itself be wrapped:
  ``optax.MultiSteps(with_bort(...), k)``, ``optax.apply_if_finite``,
  ``optax.masked``, or built inside ``optax.inject_hyperparams`` by a
  factory that passes the same learning rate to both.

  Args:
    optimizer: a complete optax optimizer (its updates include the learning
      rate), e.g. ``optax.adamw(schedule)``.
    learning_rate: the optimizer's learning rate or schedule :math:`\eta`.
    gamma: non-negative Bort coefficient :math:`\gamma`, or a schedule.
    amplitude: ``a`` (positive float) or ``"adaptive"``.
    mode: Bort mode, see :func:`add_bort_correction`.
    mask: leaves Bort constrains (default: Dense/Conv/attention kernels); pass
      the same to :func:`orthogonality_report` to log those kernels.
    dimension_numbers: how kernels are read as matrices.
    precision: precision of the correction's matmuls.
    batch_kernels: see :func:`add_bort_correction`.
    split_axis: see :func:`add_bort_correction`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` requires params.

  Raises:
    TypeError: ``optimizer`` is not an optax ``GradientTransformation``.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from bort_jax import with_bort
    >>> schedule = optax.warmup_cosine_decay_schedule(0.0, 1e-3, 10, 100)
    >>> tx = with_bort(optax.adamw(schedule), learning_rate=schedule, gamma=30.0)
    >>> params = {'dense': {'kernel': jnp.ones((4, 3)), 'bias': jnp.zeros(3)}}
    >>> updates, state = tx.update(params, tx.init(params), params)
  """
  if not isinstance(optimizer, optax.GradientTransformation):
    raise TypeError(
        'with_bort expects an optax GradientTransformation (a complete '
        f'optimizer such as optax.adamw(lr)), got {type(optimizer).__name__}.'
    )
  return optax.chain(
      optimizer,
      add_decoupled_bort_correction(
          learning_rate,
          gamma,
          amplitude=amplitude,
          mode=mode,
          mask=mask,
          dimension_numbers=dimension_numbers,
          precision=precision,
          batch_kernels=batch_kernels,
          split_axis=split_axis,
      ),
  )


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
    batch_kernels: bool | None = None,
    split_axis: str | tuple[str, ...] | None = None,
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
    split_axis: see :func:`add_bort_correction`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` requires params.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from bort_jax import bort_sgd
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
          split_axis=split_axis,
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
    batch_kernels: bool | None = None,
    split_axis: str | tuple[str, ...] | None = None,
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
    split_axis: see :func:`add_bort_correction`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` requires params.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from bort_jax import bort_adamw
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
          split_axis=split_axis,
      ),
      optax.scale_by_learning_rate(learning_rate),
  )
