r"""Backward rules: one primitive's output mapped back to its input.

A rule inverts one primitive application in which exactly one operand
depends on the input of the function being backtracked; the other operands
are constants (weights, biases, statistics, literals). It is called as
``rule(eqn, y)`` with an :class:`Equation` and the estimate ``y`` of the
primitive's output (a tuple for primitives with several results) and
returns the estimate of the dependent operand, of shape
``eqn.x_aval.shape``. Rules are pure JAX code, so the backtracking map
built from them is jittable, vmappable and differentiable.

The built-in rules (:data:`RULES`), under ``method='transpose'`` (the Bort
paper's map) and ``method='pinv'`` (least squares):

* ``dot_general`` against a constant: the transposed weights with the
  per-unit scaling of :func:`~bort_jax.explain.kernels.unit_scales`
  (``'transpose'``), or the pseudo-inverse of the kernel (``'pinv'``: by SVD
  for a Dense layer's layout, by conjugate gradients otherwise);
* ``conv_general_dilated`` against a constant kernel (any strides, padding,
  dilations, feature groups): transposed filters, scaled per output channel,
  folded back and divided by how many patches cover each pixel
  (``'transpose'``, :func:`~bort_jax.explain.kernels.conv_inverse`), or
  conjugate gradients on the whole convolution (``'pinv'``);
* ``add``, ``sub``, ``mul``, ``div``, ``neg`` with a constant: exact (a
  multiplier's zeros give 0: that part of the input is lost);
* ``exp``, ``log``, ``tanh``, ``logistic``, ``sqrt``, dtype casts: exact;
* ``max``/``min`` with a constant (ReLU, clipping) and ``clamp``:
  pass-through, what was cut is lost; ``select_n`` with a constant
  predicate: the selected positions, 0 elsewhere;
* ``reshape``, ``squeeze``, ``expand_dims``, ``transpose``, ``rev``,
  ``broadcast_in_dim``, ``slice``, ``dynamic_slice``, ``gather``, ``pad``
  (copies of input elements): :math:`A^\top y` divided by how many copies
  each element has, the least-squares inverse of a copy (exact when the
  copies agree; what a slice dropped comes back as 0);
* ``reduce_sum`` and ``reduce_window_sum`` (sum pooling, average pooling
  before its division): every element of a window gets the window's total
  divided by the window size, averaged over the windows covering it, the
  minimum-norm preimage for non-overlapping windows (a window-constant
  image comes back exactly); ``reduce_window_max`` (max pooling): every
  element gets its window's maximum, averaged likewise (nearest
  upsampling);
* ``concatenate`` and ``split``: exact, part by part.

Joins (two operands that depend on the input: LeakyReLU's ``select_n``,
residual additions) are not rules: :mod:`~bort_jax.explain.interpreter`
inverts them as blocks.

Example:
  >>> import jax.numpy as jnp
  >>> from bort_jax.explain import backtrack
  >>> g = backtrack(lambda x: jnp.exp(x).reshape(2, 3), jnp.zeros((6,)))
  >>> g(jnp.exp(jnp.arange(6.0)).reshape(2, 3)).round(4)
  Array([0., 1., 2., 3., 4., 5.], dtype=float32)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bort_jax.explain import kernels
from bort_jax.explain.graph import Node

__all__ = [
    'RULES',
    'Equation',
    'Rule',
    'Settings',
]

_HIGHEST = lax.Precision.HIGHEST


class Settings(NamedTuple):
  """How :func:`~bort_jax.explain.interpreter.backtrack` inverts (see its arguments)."""

  method: str = 'transpose'
  scaling: str = 'auto'
  eps: float = 1e-8
  maxiter: int = kernels.PINV_MAXITER
  tol: float = kernels.PINV_TOL
  residual_iterations: int = 20
  gauss_newton_steps: int = 5


class Equation(NamedTuple):
  """One primitive application to invert for its dependent operand.

  Attributes:
    node: the primitive, its parameters, shapes and source line.
    operands: each operand's value; ``None`` for the dependent one.
    index: the position of the dependent operand.
    settings: the method and its options.
  """

  node: Node
  operands: tuple[Any, ...]
  index: int
  settings: Settings

  @property
  def params(self) -> dict[str, Any]:
    return self.node.params

  @property
  def x_aval(self) -> jax.ShapeDtypeStruct:
    """Shape and dtype of the dependent operand (what the rule returns)."""
    return self.node.in_avals[self.index]

  def forward(self, x: jax.Array) -> Any:
    """The primitive as a function of the dependent operand alone."""
    operands = list(self.operands)
    operands[self.index] = x
    out = self.node.bind(*operands)
    return out[0] if len(out) == 1 else tuple(out)


#: ``rule(eqn, y) -> x``.
Rule = Callable[[Equation, Any], jax.Array]


def _transpose(fn: Callable[[jax.Array], Any], aval, y) -> jax.Array:
  (x,) = jax.linear_transpose(fn, aval)(y)
  return x


def _zeros_like(aval: jax.ShapeDtypeStruct) -> jax.Array:
  return jnp.zeros(aval.shape, aval.dtype)


def _ones_like(aval: jax.ShapeDtypeStruct) -> jax.Array:
  return jnp.ones(aval.shape, aval.dtype)


# --- Elementwise arithmetic with a constant ---------------------------------


def _other(eqn: Equation) -> Any:
  (other,) = [v for i, v in enumerate(eqn.operands) if i != eqn.index]
  return other


def _cast(eqn: Equation, x: jax.Array) -> jax.Array:
  return jnp.broadcast_to(x, eqn.x_aval.shape).astype(eqn.x_aval.dtype)


def _safe_divide(y: jax.Array, c: Any) -> jax.Array:
  c = jnp.asarray(c, y.dtype)
  nonzero = c != 0
  return jnp.where(nonzero, y / jnp.where(nonzero, c, 1), 0)


def _add_rule(eqn: Equation, y: jax.Array) -> jax.Array:
  return _cast(eqn, y - _other(eqn))


def _sub_rule(eqn: Equation, y: jax.Array) -> jax.Array:
  c = _other(eqn)
  return _cast(eqn, y + c if eqn.index == 0 else c - y)


def _mul_rule(eqn: Equation, y: jax.Array) -> jax.Array:
  return _cast(eqn, _safe_divide(y, _other(eqn)))


def _div_rule(eqn: Equation, y: jax.Array) -> jax.Array:
  c = _other(eqn)
  return _cast(eqn, y * c if eqn.index == 0 else _safe_divide(c, y))


def _elementwise(inverse: Callable[[jax.Array], jax.Array]) -> Rule:
  def rule(eqn: Equation, y: jax.Array) -> jax.Array:
    del eqn
    return inverse(y)

  return rule


def _tanh_inverse(y: jax.Array) -> jax.Array:
  bound = 1 - jnp.finfo(y.dtype).eps
  return jnp.arctanh(jnp.clip(y, -bound, bound))


def _logistic_inverse(y: jax.Array) -> jax.Array:
  tiny = jnp.finfo(y.dtype).eps
  y = jnp.clip(y, tiny, 1 - tiny)
  return jnp.log(y) - jnp.log1p(-y)


def _cast_rule(eqn: Equation, y: jax.Array) -> jax.Array:
  return y.astype(eqn.x_aval.dtype)


def _pass_through(eqn: Equation, y: jax.Array) -> jax.Array:
  return _cast(eqn, y)


def _select_constant_rule(eqn: Equation, y: jax.Array) -> jax.Array:
  """``select_n(pred, *cases)`` with one dependent case and a constant pred."""
  if eqn.index == 0:
    raise ValueError('select_n with a predicate that depends on the input')
  predicate = jnp.asarray(eqn.operands[0])
  case = eqn.index - 1
  chosen = (
      predicate == case
      if predicate.dtype != jnp.bool_
      else predicate == bool(case)
  )
  return _cast(eqn, jnp.where(chosen, y, 0))


# --- Copies of input elements ------------------------------------------------


def _copy_rule(eqn: Equation, y: jax.Array) -> jax.Array:
  r"""Least-squares inverse of a copy: :math:`A^\top y / A^\top A 1`."""
  forward = _copy_map(eqn)
  summed = _transpose(forward, eqn.x_aval, y)
  copies = _transpose(forward, eqn.x_aval, forward(_ones_like(eqn.x_aval)))
  return jnp.where(copies > 0, summed / jnp.maximum(copies, 1), 0)


def _copy_map(eqn: Equation) -> Callable[[jax.Array], jax.Array]:
  if eqn.node.primitive == 'pad':
    padding_value = jnp.zeros((), eqn.x_aval.dtype)
    return lambda x: lax.pad(x, padding_value, eqn.params['padding_config'])
  return eqn.forward


# --- Reductions and pooling -------------------------------------------------


def _window_size(eqn: Equation) -> int:
  if eqn.node.primitive == 'reduce_sum':
    shape = eqn.x_aval.shape
    return math.prod(shape[a] for a in eqn.params['axes'])
  return math.prod(eqn.params['window_dimensions'])


def _window_sum(eqn: Equation) -> Callable[[jax.Array], jax.Array]:
  """The window-sum map with ``eqn``'s windows."""
  if eqn.node.primitive == 'reduce_sum':
    return eqn.forward
  params = eqn.params
  # A NumPy zero (concrete even while tracing) makes lax pick the window-sum
  # primitive, which has a transpose rule.
  return lambda x: lax.reduce_window(
      x,
      np.zeros((), x.dtype),
      lax.add,
      params['window_dimensions'],
      params['window_strides'],
      params['padding'],
      params['base_dilation'],
      params['window_dilation'],
  )


def _window_fill_rule(eqn: Equation, y: jax.Array) -> jax.Array:
  """Fill each window with a value, average over the windows covering it."""
  window_sum = _window_sum(eqn)
  if eqn.node.primitive in ('reduce_sum', 'reduce_window_sum'):
    y = y / _window_size(eqn)
  summed = _transpose(window_sum, eqn.x_aval, y)
  count = _transpose(window_sum, eqn.x_aval, jnp.ones(y.shape, y.dtype))
  return summed / jnp.maximum(count, 1)


# --- Parts ------------------------------------------------------------------


def _concatenate_part(eqn: Equation, y: jax.Array) -> jax.Array:
  """The dependent operand's slice of a concatenation."""
  axis = eqn.params['dimension']
  start = sum(a.shape[axis] for a in eqn.node.in_avals[: eqn.index])
  return lax.slice_in_dim(y, start, start + eqn.x_aval.shape[axis], 1, axis)


def _split_rule(eqn: Equation, ys: Any) -> jax.Array:
  ys = ys if isinstance(ys, tuple) else (ys,)
  return jnp.concatenate(ys, axis=eqn.params['axis'])


# --- Dense layers: dot_general against constant weights ----------------------


def _dot_layout(eqn: Equation) -> dict[str, Any]:
  """Which axes of the weights are fan-in, units and batch, and where the
  units sit in the output."""
  (contract_lhs, contract_rhs), (batch_lhs, batch_rhs) = eqn.params[
      'dimension_numbers'
  ]
  x_is_lhs = eqn.index == 0
  weights = jnp.asarray(_other(eqn))
  w_contract = contract_rhs if x_is_lhs else contract_lhs
  w_batch = batch_rhs if x_is_lhs else batch_lhs
  x_contract = contract_lhs if x_is_lhs else contract_rhs
  x_batch = batch_lhs if x_is_lhs else batch_rhs
  w_free = [
      a for a in range(weights.ndim) if a not in w_contract and a not in w_batch
  ]
  x_free = [
      a
      for a in range(len(eqn.x_aval.shape))
      if a not in x_contract and a not in x_batch
  ]
  return {
      'weights': weights,
      'x_is_lhs': x_is_lhs,
      'w_contract': tuple(w_contract),
      'w_batch': tuple(w_batch),
      'w_free': tuple(w_free),
      'x_contract': tuple(x_contract),
      'x_batch': tuple(x_batch),
      'x_free': tuple(x_free),
  }


def _dot_unit_scales(eqn: Equation, layout: dict[str, Any]) -> jax.Array:
  """Per-unit divisors :math:`D`, shaped to broadcast against the output.

  The output of ``dot_general`` has axes (batch, lhs free, rhs free); the
  weights' units are their free axes.
  """
  weights = layout['weights']
  fan_in = math.prod(weights.shape[a] for a in layout['w_contract'])
  units = math.prod(weights.shape[a] for a in layout['w_free'])
  batch = math.prod(weights.shape[a] for a in layout['w_batch'])
  order = (*layout['w_batch'], *layout['w_contract'], *layout['w_free'])
  matrices = jnp.transpose(weights, order).reshape(batch, fan_in, units)
  scales = jax.vmap(
      lambda m: kernels.unit_scales(m, eqn.settings.scaling, eqn.settings.eps)
  )(matrices)
  scales = scales.reshape(
      *(weights.shape[a] for a in layout['w_batch']),
      *(weights.shape[a] for a in layout['w_free']),
  )
  n_batch = len(layout['w_batch'])
  n_x_free = len(layout['x_free'])
  if layout['x_is_lhs']:  # (batch, x free, w free)
    shape = (
        *scales.shape[:n_batch],
        *([1] * n_x_free),
        *scales.shape[n_batch:],
    )
  else:  # (batch, w free, x free)
    shape = (*scales.shape, *([1] * n_x_free))
  return scales.reshape(shape)


def _dot_transpose(eqn: Equation, y: jax.Array) -> jax.Array:
  layout = _dot_layout(eqn)
  weights = layout['weights']

  def forward(x):
    operands = (x, weights) if layout['x_is_lhs'] else (weights, x)
    return lax.dot_general(
        *operands,
        eqn.params['dimension_numbers'],
        precision=_HIGHEST,
        preferred_element_type=eqn.params.get('preferred_element_type'),
    )

  scaled = y / _dot_unit_scales(eqn, layout)
  return _transpose(forward, eqn.x_aval, scaled.astype(y.dtype))


def _is_dense_layout(eqn: Equation, layout: dict[str, Any]) -> bool:
  """``x @ W``: the input's last axes contract with the weights' first."""
  n = len(layout['x_contract'])
  rank = len(eqn.x_aval.shape)
  return (
      layout['x_is_lhs']
      and not layout['w_batch']
      and layout['x_contract'] == tuple(range(rank - n, rank))
      and layout['w_contract'] == tuple(range(n))
  )


def _dot_pinv(eqn: Equation, y: jax.Array) -> jax.Array:
  layout = _dot_layout(eqn)
  if _is_dense_layout(eqn, layout):
    weights = layout['weights']
    n = len(layout['w_contract'])
    fan_in = math.prod(weights.shape[:n])
    units = math.prod(weights.shape[n:])
    matrix = weights.reshape(fan_in, units)
    lead = eqn.x_aval.shape[: len(eqn.x_aval.shape) - n]
    x = jnp.matmul(
        y.reshape(*lead, units), jnp.linalg.pinv(matrix), precision=_HIGHEST
    )
    return x.reshape(eqn.x_aval.shape)
  return _joint_least_squares(eqn.forward, eqn.x_aval, y, eqn.settings)


def _dot_rule(eqn: Equation, y: jax.Array) -> jax.Array:
  if eqn.settings.method == 'pinv':
    return _dot_pinv(eqn, y)
  return _dot_transpose(eqn, y)


# --- Convolutions against a constant kernel ---------------------------------


def _conv_layout(eqn: Equation) -> dict[str, Any]:
  if eqn.index != 0:
    raise ValueError(
        'conv_general_dilated: only the input (not the kernel) may depend on '
        'the input of the function'
    )
  if eqn.params['batch_group_count'] != 1:
    raise ValueError('conv_general_dilated with batch_group_count > 1')
  dims = eqn.params['dimension_numbers']
  kernel = jnp.asarray(eqn.operands[1])
  out_axis, in_axis, *spatial = dims.rhs_spec
  groups = eqn.params['feature_group_count']
  return {
      'dims': dims,
      'kernel': kernel,
      'out_axis': out_axis,
      'in_axis': in_axis,
      'spatial': tuple(spatial),
      'groups': groups,
  }


def _conv(eqn: Equation, kernel: jax.Array, groups: int):
  params = eqn.params

  def conv(x):
    return lax.conv_general_dilated(
        x,
        kernel,
        params['window_strides'],
        params['padding'],
        lhs_dilation=params['lhs_dilation'],
        rhs_dilation=params['rhs_dilation'],
        dimension_numbers=params['dimension_numbers'],
        feature_group_count=groups,
        precision=_HIGHEST,
    )

  return conv


def _conv_unit_scales(eqn: Equation, layout: dict[str, Any]) -> jax.Array:
  kernel, groups = layout['kernel'], layout['groups']
  out_axis = layout['out_axis']
  units = kernel.shape[out_axis]
  matrix = jnp.moveaxis(kernel, out_axis, -1).reshape(-1, units)
  fan_in = matrix.shape[0]
  per_group = matrix.reshape(fan_in, groups, units // groups)
  scales = jax.vmap(
      lambda m: kernels.unit_scales(m, eqn.settings.scaling, eqn.settings.eps),
      in_axes=1,
  )(per_group)
  return scales.reshape(units)


def _conv_transpose(eqn: Equation, y: jax.Array) -> jax.Array:
  layout = _conv_layout(eqn)
  kernel, dims = layout['kernel'], layout['dims']
  feature_axis = dims.out_spec[1]
  shape = [1] * y.ndim
  shape[feature_axis] = y.shape[feature_axis]
  scaled = y / _conv_unit_scales(eqn, layout).reshape(shape).astype(y.dtype)
  summed = _transpose(_conv(eqn, kernel, layout['groups']), eqn.x_aval, scaled)
  # How many patches cover each input element: the same transpose with a
  # one-channel kernel of ones on a one-example, one-channel input.
  ones_shape = list(kernel.shape)
  ones_shape[layout['out_axis']] = ones_shape[layout['in_axis']] = 1
  x_shape = list(eqn.x_aval.shape)
  x_shape[dims.lhs_spec[0]] = x_shape[dims.lhs_spec[1]] = 1
  ones_conv = _conv(eqn, jnp.ones(ones_shape, y.dtype), 1)
  x_one = jax.ShapeDtypeStruct(tuple(x_shape), y.dtype)
  count = _transpose(
      ones_conv,
      x_one,
      jnp.ones(jax.eval_shape(ones_conv, x_one).shape, y.dtype),
  )
  return summed / jnp.maximum(count, 1.0)


def _conv_pinv(eqn: Equation, y: jax.Array) -> jax.Array:
  layout = _conv_layout(eqn)
  dims = layout['dims']
  conv = _conv(eqn, layout['kernel'], layout['groups'])
  if dims.lhs_spec[0] == 0 and dims.out_spec[0] == 0:
    return kernels.least_squares_inverse(
        conv,
        y,
        eqn.x_aval.shape[1:],
        maxiter=eqn.settings.maxiter,
        tol=eqn.settings.tol,
    )
  return _joint_least_squares(conv, eqn.x_aval, y, eqn.settings)


def _conv_rule(eqn: Equation, y: jax.Array) -> jax.Array:
  if eqn.settings.method == 'pinv':
    return _conv_pinv(eqn, y)
  return _conv_transpose(eqn, y)


def _joint_least_squares(
    linear: Callable[[jax.Array], jax.Array],
    x_aval: jax.ShapeDtypeStruct,
    y: jax.Array,
    settings: Settings,
) -> jax.Array:
  """:math:`A^+ y` for a linear map over the whole batch, by CG."""
  transpose = jax.linear_transpose(linear, x_aval)

  def normal(x):
    (x,) = transpose(linear(x))
    return x

  (rhs,) = transpose(y)
  x, _ = jax.scipy.sparse.linalg.cg(
      normal, rhs, tol=settings.tol, atol=0.0, maxiter=settings.maxiter
  )
  return x


#: The built-in rules, by primitive name.
RULES: dict[str, Rule] = {
    'add': _add_rule,
    'add_any': _add_rule,
    'sub': _sub_rule,
    'mul': _mul_rule,
    'div': _div_rule,
    'neg': _elementwise(lambda y: -y),
    'exp': _elementwise(jnp.log),
    'log': _elementwise(jnp.exp),
    'tanh': _elementwise(_tanh_inverse),
    'logistic': _elementwise(_logistic_inverse),
    'sqrt': _elementwise(jnp.square),
    'convert_element_type': _cast_rule,
    'reduce_precision': _pass_through,
    'copy': _pass_through,
    'copy_p': _pass_through,
    'sharding_constraint': _pass_through,
    'optimization_barrier': _pass_through,
    'max': _pass_through,
    'min': _pass_through,
    'clamp': _pass_through,
    'select_n': _select_constant_rule,
    'reshape': _copy_rule,
    'squeeze': _copy_rule,
    'expand_dims': _copy_rule,
    'transpose': _copy_rule,
    'rev': _copy_rule,
    'broadcast_in_dim': _copy_rule,
    'slice': _copy_rule,
    'dynamic_slice': _copy_rule,
    'gather': _copy_rule,
    'pad': _copy_rule,
    'concatenate': _concatenate_part,
    'split': _split_rule,
    'reduce_sum': _window_fill_rule,
    'reduce_window_sum': _window_fill_rule,
    'reduce_window_max': _window_fill_rule,
    'dot_general': _dot_rule,
    'conv_general_dilated': _conv_rule,
}
