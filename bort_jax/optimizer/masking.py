"""Which leaves of a parameter pytree Bort constrains, and how each is read.

Bort constrains weight matrices only: Dense, Conv and attention kernels. The
official PyTorch optimizer constrains every tensor it is handed (biases
included) and leaves the filtering to the caller; here the filtering is part of
the library. The defaults work on plain dicts, Flax linen ``params`` and
``nnx.State`` (with ``nnx.Variable`` leaves or pure arrays).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Union

import jax
import jax.numpy as jnp
from jax import Array

from bort_jax.optimizer import layout
from bort_jax.optimizer import placement

PyTree = Any
MaskOrFn = Union[PyTree, Callable[[PyTree], PyTree]]
DimensionNumbersOrFn = Union[
    layout.BortDimensionNumbers, PyTree, Callable[[PyTree], PyTree]
]

ATTENTION_INPUT_PROJECTIONS = ('query', 'key', 'value')


def path_names(path) -> tuple[str, ...]:
  """Human-readable names of a key path, without nnx's trailing ``.value``."""
  names = []
  for entry in path:
    if isinstance(entry, jax.tree_util.DictKey):
      names.append(str(entry.key))
    elif isinstance(entry, jax.tree_util.GetAttrKey):
      names.append(entry.name)
    elif isinstance(entry, jax.tree_util.SequenceKey):
      names.append(str(entry.idx))
    elif isinstance(entry, jax.tree_util.FlattenedIndexKey):
      names.append(str(entry.key))
    else:
      names.append(str(entry))
  while (
      path
      and isinstance(path[-1], jax.tree_util.GetAttrKey)
      and path[-1].name in ('value', 'raw_value')
  ):
    path = path[:-1]
    names.pop()
  return tuple(names)


def path_string(path) -> str:
  """``'encoder/block_0/query/kernel'`` style name of a key path."""
  return '/'.join(path_names(path))


def _is_floating(leaf) -> bool:
  dtype = getattr(leaf, 'dtype', None)
  return dtype is not None and jnp.issubdtype(dtype, jnp.floating)


def _is_inexact(leaf) -> bool:
  """Real or complex floating point: what an explicit mask may select."""
  dtype = getattr(leaf, 'dtype', None)
  return dtype is not None and jnp.issubdtype(dtype, jnp.inexact)


def is_kernel(path, leaf) -> bool:
  """Whether a leaf is a floating-point Dense/Conv/attention kernel."""
  names = path_names(path)
  return (
      bool(names)
      and names[-1] == 'kernel'
      and _is_floating(leaf)
      and getattr(leaf, 'ndim', 0) >= 2
  )


def default_mask(params: PyTree) -> PyTree:
  """``True`` for the leaves Bort constrains by default.

  A leaf is selected when it is a floating-point array with at least two
  dimensions whose path ends in ``kernel`` (Flax ``Dense``/``Conv``/
  ``DenseGeneral``/``LinearGeneral``/attention projections). Biases, norm
  scales, embeddings, position tables and class tokens are never selected.

  Args:
    params: a parameter pytree (dict, linen params, ``nnx.State``).

  Returns:
    A pytree of Python bools with the structure of ``params``.

  Example:
    >>> import jax.numpy as jnp
    >>> from bort_jax import default_mask
    >>> default_mask({'dense': {'kernel': jnp.ones((3, 4)), 'bias': jnp.ones(4)}})
    {'dense': {'bias': False, 'kernel': True}}
  """
  return jax.tree_util.tree_map_with_path(is_kernel, params)


def _check_every_pattern_matches(params: PyTree, compiled, caller: str) -> None:
  """Raises if a pattern matches no kernel path; the message lists them."""
  kernel_paths = [
      path_string(path)
      for path, leaf in jax.tree_util.tree_leaves_with_path(params)
      if is_kernel(path, leaf)
  ]
  unmatched = [
      c.pattern for c in compiled if not any(c.search(p) for p in kernel_paths)
  ]
  if unmatched:
    raise ValueError(
        f'{caller}: {unmatched} match no kernel; the kernels are {kernel_paths}'
    )


def kernels_except(*patterns: str) -> Callable[[PyTree], PyTree]:
  """A mask function: :func:`default_mask` minus the kernels named by ``patterns``.

  Each pattern is a regular expression searched (``re.search``) in the
  kernel's path string, ``'layers/3/kernel'`` or ``'head/kernel'`` say. The
  usual use is to leave a classifier head out of the constraint, as the
  official optimizer allows by handing it only some parameter groups.

  Args:
    *patterns: regular expressions; a kernel matching any of them is not
      selected.

  Returns:
    A function of a parameter pytree returning a pytree of Python bools, for
    the ``mask`` argument of :func:`bort_jax.add_bort_correction`,
    :func:`bort_jax.bort_sgd` and :func:`bort_jax.bort_adamw`.

  Raises:
    ValueError: a pattern that is not a valid regular expression (at once), or
      one that matches none of the kernels (when the mask is applied, with the
      list of kernel paths).

  Example:
    >>> import jax.numpy as jnp
    >>> from bort_jax import kernels_except
    >>> params = {'body': {'kernel': jnp.ones((3, 3))}, 'head': {'kernel': jnp.ones((3, 2))}}
    >>> kernels_except('^head/')(params)
    {'body': {'kernel': True}, 'head': {'kernel': False}}
  """
  compiled = _compile_patterns('kernels_except', patterns)

  def mask(params: PyTree) -> PyTree:
    _check_called_with_params(params, 'kernels_except')
    _check_every_pattern_matches(params, compiled, 'kernels_except')

    def selected(path, leaf) -> bool:
      return is_kernel(path, leaf) and not any(
          c.search(path_string(path)) for c in compiled
      )

    return jax.tree_util.tree_map_with_path(selected, params)

  return mask


def _compile_patterns(
    function: str, patterns: tuple[str, ...]
) -> list[re.Pattern]:
  compiled = []
  for pattern in patterns:
    if not isinstance(pattern, str):
      raise ValueError(f'{function} patterns must be strings, got {pattern!r}')
    try:
      compiled.append(re.compile(pattern))
    except re.error as error:
      raise ValueError(
          f'{function}: invalid regular expression {pattern!r}: {error}'
      ) from None
  return compiled


def _check_called_with_params(params: PyTree, function: str) -> None:
  """A mask function called with a step count has been taken for a schedule."""
  if isinstance(params, (int, float)) or getattr(params, 'ndim', None) == 0:
    raise ValueError(
        f'{function} was called with {params!r} instead of a parameter pytree. '
        'optax.inject_hyperparams calls every callable argument with the step '
        'count, as a schedule: name mask and dimension_numbers in its '
        'static_args, e.g. optax.inject_hyperparams(bort_adamw, '
        "static_args=('mask', 'dimension_numbers'))."
    )


def stacked_dimension_numbers(
    *patterns: str, num_stacked_axes: int = 1
) -> Callable[[PyTree], PyTree]:
  """Dimension numbers for kernels stacked along leading axes (scanned layers).

  Layers made with ``nnx.vmap``, ``nnx.scan`` or ``nn.scan`` (or
  ``nn.vmap``) store one kernel per layer stacked along a new leading axis: a
  ``Dense(in, out)`` repeated ``L`` times is a ``(L, in, out)`` kernel. Read
  with the default dimension numbers that is *one* ``(L * in) x out`` matrix,
  whose ``out`` columns would be made orthogonal across all layers together.
  This function returns, for the ``dimension_numbers`` argument, the default
  reading of each kernel whose path matches one of ``patterns``, with its
  first ``num_stacked_axes`` axes as independent matrices
  (``batch_axis``): one ``in x out`` matrix per layer. Other kernels keep
  the default reading (:func:`default_dimension_numbers`).

  Args:
    *patterns: regular expressions searched (``re.search``) in each kernel's
      path string, e.g. ``'^layers/'`` or ``'blocks/.*/mlp'``; at least one.
    num_stacked_axes: how many leading axes index layers (2 for a scan over a
      vmap, say).

  Returns:
    A function of a parameter pytree returning a pytree of
    :class:`BortDimensionNumbers` (``None`` where the default mask selects
    nothing).

  Raises:
    ValueError: no pattern, an invalid regular expression or a
      ``num_stacked_axes`` below 1 (at once); a pattern matching no kernel, or
      a matched kernel with no axes left for a matrix (when applied).

  Example:
    >>> import jax.numpy as jnp
    >>> from bort_jax import stacked_dimension_numbers
    >>> params = {'layers': {'kernel': jnp.ones((3, 4, 4))},
    ...           'head': {'kernel': jnp.ones((4, 2))}}
    >>> stacked_dimension_numbers('^layers/')(params)['layers']['kernel']
    BortDimensionNumbers(output_axis=(-1,), batch_axis=(0,))
  """
  if not patterns:
    raise ValueError(
        'stacked_dimension_numbers needs at least one pattern naming the '
        "stacked kernels (e.g. '^layers/'; '.' for every kernel)."
    )
  compiled = _compile_patterns('stacked_dimension_numbers', patterns)
  if (
      not isinstance(num_stacked_axes, int)
      or isinstance(num_stacked_axes, bool)
      or num_stacked_axes < 1
  ):
    raise ValueError(
        f'num_stacked_axes must be a positive integer, got {num_stacked_axes!r}.'
    )

  def dimension_numbers(params: PyTree) -> PyTree:
    _check_called_with_params(params, 'stacked_dimension_numbers')
    _check_every_pattern_matches(params, compiled, 'stacked_dimension_numbers')

    def numbers(path, leaf):
      if not is_kernel(path, leaf):
        return None
      name = path_string(path)
      if not any(c.search(name) for c in compiled):
        return kernel_dimension_numbers(path, leaf)
      if leaf.ndim < num_stacked_axes + 2:
        raise ValueError(
            f'stacked_dimension_numbers: {name} of shape {tuple(leaf.shape)} has '
            f'{num_stacked_axes} stacked axes and fewer than 2 left for a matrix.'
        )
      single = kernel_dimension_numbers(
          path, _Unstacked(leaf.ndim - num_stacked_axes)
      )
      output = tuple(
          axis + num_stacked_axes if axis >= 0 else axis
          for axis in layout.as_axes(single.output_axis)
      )
      return layout.BortDimensionNumbers(
          output_axis=output, batch_axis=tuple(range(num_stacked_axes))
      )

    return jax.tree_util.tree_map_with_path(numbers, params)

  return dimension_numbers


@dataclasses.dataclass(frozen=True)
class _Unstacked:
  """Stands for one layer of a stacked kernel: only its rank matters."""

  ndim: int


def kernel_dimension_numbers(path, leaf) -> layout.BortDimensionNumbers:
  """Default reading of one kernel: output axis last, except attention inputs.

  ``query``/``key``/``value`` kernels of shape ``(in, heads, head_dim)`` have
  output axes ``(1, 2)``: each head's units are output units of one
  ``in x (heads * head_dim)`` matrix. The attention ``out`` kernel
  ``(heads, head_dim, out)`` keeps the default: its fan-in is
  ``heads * head_dim``.
  """
  names = path_names(path)
  if (
      getattr(leaf, 'ndim', 0) == 3
      and len(names) >= 2
      and names[-2] in ATTENTION_INPUT_PROJECTIONS
  ):
    return layout.BortDimensionNumbers(output_axis=(1, 2))
  return layout.BortDimensionNumbers()


def default_dimension_numbers(params: PyTree) -> PyTree:
  """Dimension numbers for every leaf the default mask selects, else ``None``.

  Args:
    params: a parameter pytree.

  Returns:
    A pytree with the structure of ``params`` whose leaves are
    :class:`BortDimensionNumbers` or ``None``.
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: kernel_dimension_numbers(path, leaf)
      if is_kernel(path, leaf)
      else None,
      params,
  )


@dataclasses.dataclass(frozen=True)
class SelectedLeaf:
  """A leaf Bort constrains: its position among the flattened leaves and how to read it."""

  index: int
  path: str
  dimension_numbers: layout.BortDimensionNumbers


def check_mask_argument(mask: MaskOrFn | None) -> None:
  """Rejects a scalar or string where a mask pytree or callable belongs."""
  if isinstance(mask, (str, int, float)):
    raise ValueError(
        f'mask must be a pytree of bools or a callable, got {mask!r}.'
    )


def check_dimension_numbers_argument(
    dimension_numbers: DimensionNumbersOrFn | None,
) -> None:
  """Validates what can be validated before the params are known."""
  if isinstance(dimension_numbers, layout.BortDimensionNumbers):
    layout.check_dimension_numbers(dimension_numbers)
  elif isinstance(dimension_numbers, (str, int, float)):
    raise ValueError(
        'dimension_numbers must be a BortDimensionNumbers, a pytree of them or '
        f'a callable, got {dimension_numbers!r}.'
    )


def _flatten_like(treedef, tree, what: str) -> list:
  is_leaf = lambda x: x is None or isinstance(x, layout.BortDimensionNumbers)
  try:
    return treedef.flatten_up_to(tree)
  except (ValueError, TypeError) as error:
    leaves = jax.tree_util.tree_leaves(tree, is_leaf=is_leaf)
    raise ValueError(
        f'The {what} does not have the structure of the parameters '
        f'({len(leaves)} leaves vs {treedef.num_leaves}): {error}'
    ) from error


def select_leaves(
    params: PyTree,
    mask: MaskOrFn | None = None,
    dimension_numbers: DimensionNumbersOrFn | None = None,
) -> tuple[list[Any], Any, list[SelectedLeaf]]:
  """Flattens ``params`` and lists the leaves Bort constrains.

  Args:
    params: parameter pytree.
    mask: pytree of bools with the structure of ``params``, a callable
      returning one, or ``None`` for :func:`default_mask`.
    dimension_numbers: a single :class:`BortDimensionNumbers` for every
      selected leaf, a pytree of them (``None`` leaves where unselected), a
      callable returning one, or ``None`` for the defaults.

  Returns:
    ``(leaves, treedef, selected)``: the flattened params, their treedef, and
    one :class:`SelectedLeaf` per constrained leaf.

  Integer and boolean leaves are never selected, whatever the mask says.
  Complex leaves are selected only by an explicit mask (the default mask
  takes real floating kernels).

  Raises:
    ValueError: a selected floating leaf has fewer than two dimensions, has no
      dimension numbers, or its dimension numbers name axes it does not have.
      Errors name the leaf's path.
  """
  paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  leaves = [leaf for _, leaf in paths_and_leaves]
  mask_tree = (
      default_mask(params)
      if mask is None
      else (mask(params) if callable(mask) else mask)
  )
  mask_flat = _flatten_like(treedef, mask_tree, 'mask')

  if dimension_numbers is None:
    dims_flat = [
        kernel_dimension_numbers(path, leaf) for path, leaf in paths_and_leaves
    ]
  elif isinstance(dimension_numbers, layout.BortDimensionNumbers):
    dims_flat = [dimension_numbers] * len(leaves)
  else:
    dims_tree = (
        dimension_numbers(params)
        if callable(dimension_numbers)
        else dimension_numbers
    )
    dims_flat = _flatten_like(treedef, dims_tree, 'dimension_numbers tree')

  selected = []
  for index, ((path, leaf), chosen, dims) in enumerate(
      zip(paths_and_leaves, mask_flat, dims_flat)
  ):
    try:
      chosen = bool(chosen)
    except (jax.errors.ConcretizationTypeError, TypeError, ValueError) as error:
      raise ValueError(
          f'The mask entry for {path_string(path)} must be a bool known at trace '
          f'time, got {chosen!r}.'
      ) from error
    if not chosen:
      continue
    name = path_string(path) or '<root>'
    if not _is_inexact(leaf):
      continue  # integer/bool leaves are never constrained, whatever the mask says
    if leaf.ndim < 2:
      raise ValueError(
          f'The Bort mask selects {name} of shape {tuple(leaf.shape)}: Bort '
          'constrains weight matrices, which need at least 2 dimensions.'
      )
    if dims is None:
      raise ValueError(
          f'The Bort mask selects {name} but its dimension_numbers are None.'
      )
    layout.check_dimension_numbers(dims)
    layout.normalized_axes(leaf.shape, dims, name)
    selected.append(SelectedLeaf(index, name, dims))
  return leaves, treedef, selected


def selected_matrices(
    leaves: list[Array], selected: list[SelectedLeaf]
) -> list[Array]:
  """Reads each selected leaf as a ``[B, fan_in, out]`` stack (no dtype change).

  A leaf sharded over explicit mesh axes is replicated first, as the
  optimizer does for its correction.
  """
  return [
      layout.to_matrices(
          placement.to_replicated(leaves[s.index]), s.dimension_numbers
      )
      for s in selected
  ]
