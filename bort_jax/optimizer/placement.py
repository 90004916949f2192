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
ambiguous for any sharded kernel. Here the correction runs with the compiler
choosing shardings (:func:`on_own_shardings`, through
:func:`jax.sharding.auto_axes`), as under auto axes, so that each device
computes its share, and the result comes back on the kernel's own explicit
sharding. Under auto axes the compiler keeps each kernel's sharding as long as
kernels are corrected one by one; :func:`placement_key` says when kernels may
be stacked and corrected together without moving data between devices.
:func:`split_spec` and :func:`constrain` spread the correction of replicated
kernels over a mesh axis (``split_axis``). :func:`to_replicated` serves the
orthogonality report, which reads whole kernels.
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


def kernel_mesh(x: Array) -> Any:
  """The (abstract) mesh ``x`` is on inside ``jit``, or ``None`` on one device.

  Under auto axes the mesh is known while tracing even though the sharding is
  not; a mesh of one device counts as none.
  """
  mesh = getattr(_sharding(x), 'mesh', None)
  if (
      mesh is None
      or getattr(mesh, 'empty', True)
      or getattr(mesh, 'size', 0) == 1
  ):
    return None
  return mesh


def check_split_axis(split_axis: str | tuple[str, ...] | None) -> None:
  """Raises ``ValueError`` unless ``split_axis`` is ``None``, a name or names."""
  if split_axis is None:
    return
  names = (split_axis,) if isinstance(split_axis, str) else split_axis
  if (
      not isinstance(names, tuple)
      or not names
      or not all(isinstance(n, str) and n for n in names)
  ):
    raise ValueError(
        'split_axis must be a mesh axis name or a tuple of them, got '
        f'{split_axis!r}.'
    )


def split_spec(
    mesh: Any, split_axis: str | tuple[str, ...], ndim: int, dim: int
) -> PartitionSpec:
  """``P`` sharding dimension ``dim`` of an ``ndim``-array over ``split_axis``.

  Raises:
    ValueError: an axis of ``split_axis`` is not an axis of ``mesh``.
  """
  names = (split_axis,) if isinstance(split_axis, str) else tuple(split_axis)
  missing = [n for n in names if n not in mesh.axis_names]
  if missing:
    raise ValueError(
        f'split_axis {split_axis!r}: {missing} not among the mesh axes '
        f'{tuple(mesh.axis_names)} the kernels are on.'
    )
  entries = [None] * ndim
  entries[dim] = names[0] if len(names) == 1 else names
  return PartitionSpec(*entries)


def constrain(x: Array, mesh: Any, spec: PartitionSpec) -> Array:
  """``x`` constrained to ``spec`` over ``mesh`` (auto axes: a hint to XLA)."""
  return jax.lax.with_sharding_constraint(
      x, jax.sharding.NamedSharding(mesh, spec)
  )


def on_own_shardings(fn, kernels: list[Array], specs: list[Any]) -> Any:
  """``fn(kernels)`` with XLA choosing shardings, results on ``specs``.

  Under explicit axes a matmul whose operands are sharded along their
  contraction is ambiguous; :func:`jax.sharding.auto_axes` lets the compiler
  partition it as it does under auto axes (each device works on its share,
  partial Gram matrices are summed), and the results come back with the
  explicit ``specs``. With no explicit spec ``fn`` runs as is.
  """
  if all(spec is None for spec in specs):
    return fn(kernels)
  run = jax.sharding.auto_axes(
      fn, out_sharding=[PartitionSpec() if s is None else s for s in specs]
  )
  if getattr(jax.sharding.get_abstract_mesh(), 'empty', True):
    mesh = next(
        _sharding(k).mesh for k, s in zip(kernels, specs) if s is not None
    )
    with jax.sharding.use_abstract_mesh(mesh):
      return run(kernels)
  return run(kernels)
