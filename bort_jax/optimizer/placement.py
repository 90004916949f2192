"""Where a kernel lives, and how the correction stays out of the way of it.

JAX has two ways to shard an array inside ``jax.jit``:

* *explicit* mesh axes (``jax.make_mesh(..., axis_types=(AxisType.Explicit,
  ...))`` with ``jax.set_mesh``): every traced array carries its sharding in
  its type (``jax.typeof(x).sharding``), and a matmul or reshape whose result
  sharding is ambiguous is an error;
* *auto* axes (``jax.sharding.Mesh`` and ``jax.device_put``, the default of
  older JAX): the compiler chooses shardings, and a traced array only says
  which mesh it is on.

The correction reads each kernel as matrices (a transpose and a reshape) and
multiplies them by their own transpose, which under explicit axes is
ambiguous for any sharded kernel. Here such a kernel is made replicated for the
correction (:func:`to_replicated`) and the result is put back on the kernel's
own sharding (:func:`to_sharding`). Under auto axes nothing is changed, and the
compiler keeps each kernel's sharding as long as kernels are corrected one by
one; :func:`placement_key` says when kernels may be stacked and corrected
together without moving data between devices.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import jax
from jax import Array
from jax.sharding import PartitionSpec


def _sharding(x: Array) -> Any:
  """The ``NamedSharding`` in ``x``'s type, or ``None`` where JAX has none."""
  typeof = getattr(jax, 'typeof', None)
  if typeof is None:  # pragma: no cover - JAX before ``jax.typeof``
    return None
  try:
    return getattr(typeof(x), 'sharding', None)
  except TypeError:  # pragma: no cover - not a JAX value
    return None


def _axis_type_names(mesh) -> tuple[str, ...]:
  return tuple(
      str(t).rsplit('.', 1)[-1] for t in getattr(mesh, 'axis_types', ())
  )


def explicit_spec(x: Array) -> PartitionSpec | None:
  """``x``'s partition spec when it is sharded over explicit mesh axes.

  Returns:
    The ``PartitionSpec`` of ``x`` when its mesh has at least one explicit
    axis (the spec may be fully replicated, ``P()``), else ``None``.
  """
  sharding = _sharding(x)
  mesh = getattr(sharding, 'mesh', None)
  if mesh is None or getattr(mesh, 'empty', True):
    return None
  if 'Explicit' not in _axis_type_names(mesh):
    return None
  return sharding.spec


def _is_sharded(spec: PartitionSpec) -> bool:
  return any(entry is not None for entry in spec)


def to_replicated(x: Array) -> Array:
  """``x`` replicated over its explicit mesh axes; ``x`` itself otherwise."""
  spec = explicit_spec(x)
  if spec is None or not _is_sharded(spec):
    return x
  return jax.sharding.reshard(x, PartitionSpec())


def to_sharding(x: Array, spec: PartitionSpec | None) -> Array:
  """``x`` resharded to ``spec`` over explicit axes; unchanged when ``None``."""
  if spec is None:
    return x
  current = explicit_spec(x)
  if current is not None and tuple(current) == tuple(spec):
    return x
  return jax.sharding.reshard(x, spec)


def placement_key(x: Array) -> Hashable | None:
  """A key equal for arrays that can be stacked without moving data.

  Returns:
    ``('single',)`` for an array on no mesh or a one-device mesh (inside
    ``jit`` this means the computation runs on one device),
    ``('explicit', spec)`` for an array on a mesh whose axes of size above one
    are all explicit, and ``None`` when its sharding is chosen by the compiler
    and unknown here (auto axes): such arrays are never stacked.
  """
  sharding = _sharding(x)
  mesh = getattr(sharding, 'mesh', None)
  if (
      mesh is None
      or getattr(mesh, 'empty', True)
      or getattr(mesh, 'size', 0) == 1
  ):
    return ('single',)
  sizes = dict(getattr(mesh, 'shape', {}))
  types = dict(zip(getattr(mesh, 'axis_names', ()), _axis_type_names(mesh)))
  if all(
      types.get(name) == 'Explicit' for name, size in sizes.items() if size > 1
  ):
    return ('explicit', tuple(sharding.spec))
  return None
