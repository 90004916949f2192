"""How a kernel of any rank is read as a batch of weight matrices.

Flax stores the output axis of a kernel last: ``Dense`` ``(in, out)``, ``Conv``
``(kh, kw, in, out)``. Bort constrains the matrix whose *columns* are output
units, ``M = kernel.reshape(-1, out)`` (the transpose of the PyTorch
``[out, fan_in]`` matrix). :class:`BortDimensionNumbers` says which axes are
output units and which index independent matrices (a scanned layer index, or
per-head matrices); every other axis is fan-in.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np
from jax import Array


class BortDimensionNumbers(NamedTuple):
  """Which axes of a kernel are output units and which index separate matrices.

  The kernel is read as ``B`` matrices ``M_b`` of shape ``[fan_in, out]``, where
  ``out`` is the product of the ``output_axis`` sizes, ``B`` the product of the
  ``batch_axis`` sizes and ``fan_in`` the product of all remaining axes.
  The order of the fan-in axes is irrelevant: every Bort mode is equivariant to
  a permutation of the fan-in.

  Examples:
    >>> from bort_jax import BortDimensionNumbers
    >>> BortDimensionNumbers()  # Dense (in, out), Conv (kh, kw, in, out)
    BortDimensionNumbers(output_axis=(-1,), batch_axis=())
    >>> # attention query/key/value kernel (in, heads, head_dim)
    >>> qkv = BortDimensionNumbers(output_axis=(1, 2))
    >>> # a scanned stack of Dense kernels (layers, in, out)
    >>> stacked = BortDimensionNumbers(output_axis=-1, batch_axis=0)

  Attributes:
    output_axis: axis or axes whose entries are the output units.
    batch_axis: axis or axes that index independent matrices.
  """

  output_axis: int | Sequence[int] = (-1,)
  batch_axis: int | Sequence[int] = ()


def _is_integer(axis) -> bool:
  return isinstance(axis, (int, np.integer)) and not isinstance(
      axis, (bool, np.bool_)
  )


def as_axes(axes: int | Sequence[int]) -> tuple[int, ...]:
  """``axes`` as a tuple of ints; anything else is a clear ``ValueError``."""
  if _is_integer(axes):
    return (int(axes),)
  if isinstance(axes, (str, bytes)) or not isinstance(axes, Sequence):
    raise ValueError(
        f'Bort dimension numbers: axes must be integers, got {axes!r}.'
    )
  if not all(_is_integer(axis) for axis in axes):
    raise ValueError(
        f'Bort dimension numbers: axes must be integers, got {axes!r}.'
    )
  return tuple(int(axis) for axis in axes)


def check_dimension_numbers(dimension_numbers: BortDimensionNumbers) -> None:
  """Raises ``ValueError`` for dimension numbers that can never be valid."""
  if not isinstance(dimension_numbers, BortDimensionNumbers):
    raise TypeError(
        'Expected a BortDimensionNumbers, got '
        f'{type(dimension_numbers).__name__}: {dimension_numbers!r}.'
    )
  output = as_axes(dimension_numbers.output_axis)
  batch = as_axes(dimension_numbers.batch_axis)
  if not output:
    raise ValueError(
        f'{dimension_numbers}: output_axis must name at least one axis.'
    )
  for axis in output + batch:
    if not isinstance(axis, int) or isinstance(axis, bool):
      raise ValueError(
          f'{dimension_numbers}: axes must be integers, got {axis!r}.'
      )


def normalized_axes(
    shape: Sequence[int],
    dimension_numbers: BortDimensionNumbers,
    name: str = 'kernel',
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
  """Returns ``(batch_axes, fan_in_axes, output_axes)`` as non-negative ints.

  Args:
    shape: shape of the kernel.
    dimension_numbers: how to read it.
    name: used in error messages (e.g. the leaf's path).

  Raises:
    ValueError: an axis does not exist, repeats, or leaves no fan-in axis.
  """
  ndim = len(shape)
  resolved = {}
  for role in ('output_axis', 'batch_axis'):
    axes = as_axes(getattr(dimension_numbers, role))
    for axis in axes:
      if not -ndim <= axis < ndim:
        raise ValueError(
            f'{name}: {role}={axis} does not exist for a kernel of shape '
            f'{tuple(shape)} ({ndim} axes).'
        )
    resolved[role] = tuple(axis % ndim for axis in axes)
  output, batch = resolved['output_axis'], resolved['batch_axis']
  if len(set(output + batch)) != len(output) + len(batch):
    raise ValueError(
        f'{name}: output_axis {output} and batch_axis {batch} repeat an axis '
        f'(kernel shape {tuple(shape)}).'
    )
  fan_in = tuple(a for a in range(ndim) if a not in output and a not in batch)
  if not fan_in:
    raise ValueError(
        f'{name}: kernel of shape {tuple(shape)} has no fan-in axis left with '
        f'{dimension_numbers}; a weight matrix needs at least one.'
    )
  return batch, fan_in, output


def matrix_shape(
    shape: Sequence[int],
    dimension_numbers: BortDimensionNumbers,
    name: str = 'kernel',
) -> tuple[int, int, int]:
  """Returns ``(num_matrices, fan_in, out)`` for a kernel shape."""
  batch, fan_in, output = normalized_axes(shape, dimension_numbers, name)
  size = lambda axes: math.prod(shape[a] for a in axes)
  return size(batch), size(fan_in), size(output)


def to_matrices(
    kernel: Array, dimension_numbers: BortDimensionNumbers
) -> Array:
  """Reads ``kernel`` as a stack of matrices of shape ``[B, fan_in, out]``."""
  batch, fan_in, output = normalized_axes(kernel.shape, dimension_numbers)
  b, n, d = matrix_shape(kernel.shape, dimension_numbers)
  return jnp.transpose(kernel, batch + fan_in + output).reshape(b, n, d)


def from_matrices(
    matrices: Array,
    shape: Sequence[int],
    dimension_numbers: BortDimensionNumbers,
) -> Array:
  """Inverse of :func:`to_matrices`: puts ``[B, fan_in, out]`` back in ``shape``."""
  batch, fan_in, output = normalized_axes(shape, dimension_numbers)
  order = batch + fan_in + output
  permuted = matrices.reshape(tuple(shape[a] for a in order))
  inverse = [0] * len(order)
  for position, axis in enumerate(order):
    inverse[axis] = position
  return jnp.transpose(permuted, inverse)
