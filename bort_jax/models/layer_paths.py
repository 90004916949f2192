"""Layers named as a config names them, and where their parameters live.

A config leaves layers out of the Bort term by name (``bort_exclude =
('classifier',)``); the model turns those names into the regular expressions
over kernel paths that :func:`bort_jax.kernels_except` takes. In a
:class:`~bort_jax.models.layers.NamedSequential` (MLP, CNNs, VGGs) the names
are the layer names and the parameters of layer ``i`` live under
``layers/<i>``; in any other model (ResNets, ViTs) a name is the path of a
submodule, ``'classifier'``, ``'head'`` or ``'blocks/0/attention'``.

Example:
  >>> from flax import nnx
  >>> from bort_jax.models.mlp import MLP
  >>> model = nnx.eval_shape(lambda: MLP(rngs=nnx.Rngs(0)))
  >>> exclusion_patterns(model, ('classifier',))
  ('^layers/3/',)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import jax
from flax import nnx

from bort_jax.models.layers import NamedSequential
from bort_jax.optimizer.masking import is_kernel, path_string

_NAME = re.compile(r'[A-Za-z_]\w*(?:/\w+)*')


def looks_like_layer_name(entry: str) -> bool:
  """Whether a ``bort_exclude`` entry reads as a layer name (letters, digits,
  ``_`` and ``/``) rather than a regular expression (``^layers/9/kernel$``)."""
  return isinstance(entry, str) and _NAME.fullmatch(entry) is not None


def layer_paths(model: nnx.Module) -> dict[str, str]:
  """``{layer name: path of its parameters}`` of every layer or submodule.

  Example:
    >>> from flax import nnx
    >>> from bort_jax.models.mlp import MLP
    >>> layer_paths(nnx.eval_shape(lambda: MLP(rngs=nnx.Rngs(0))))
    {'flatten': 'layers/0', 'fc1': 'layers/1', 'fc1_relu': 'layers/2', 'classifier': 'layers/3'}
  """
  if isinstance(model, NamedSequential):
    return {name: f'layers/{i}' for i, name in enumerate(model.layer_names)}
  paths = {}
  for path, node in nnx.iter_graph(model):
    if path and isinstance(node, nnx.Module):
      name = '/'.join(str(key) for key in path)
      paths[name] = name
  return dict(sorted(paths.items()))


def kernel_paths(model: nnx.Module) -> list[str]:
  """The paths of the model's kernels (what Bort may constrain)."""
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  return [path_string(path) for path, leaf in leaves if is_kernel(path, leaf)]


def _valid_names(model: nnx.Module, paths: dict[str, str]) -> str:
  if isinstance(model, NamedSequential):
    return f'layer names: {list(paths)}'
  top_level = [name for name in paths if '/' not in name]
  nested = [name for name in paths if '/' in name]
  if not nested:
    return f'submodules: {top_level}'
  return (
      f'top-level submodules: {top_level} (nested ones by path, e.g. '
      f'{nested[0]!r})'
  )


def exclusion_patterns(
    model: nnx.Module, exclude: Sequence[str]
) -> tuple[str, ...]:
  """The kernel-path patterns leaving the layers in ``exclude`` out of Bort.

  Each entry of ``exclude`` is a layer name (see :func:`layer_paths`),
  turned into ``'^<its path>/'``, or a regular expression over kernel paths
  (``'^layers/9/kernel$'``, ``'^head/'``), kept as it is.

  Args:
    model: the model (an abstract one from ``nnx.eval_shape`` will do).
    exclude: layer names or regular expressions.

  Returns:
    Patterns for :func:`bort_jax.kernels_except`, one per entry.

  Raises:
    ValueError: a name that is no layer of the model and no pattern matching
      one of its kernels (the message lists the valid names), or a layer that
      holds no kernel.

  Example:
    >>> from flax import nnx
    >>> from bort_jax.models.mlp import MLP
    >>> model = nnx.eval_shape(lambda: MLP(rngs=nnx.Rngs(0)))
    >>> exclusion_patterns(model, ('fc1', '^layers/3/kernel$'))
    ('^layers/1/', '^layers/3/kernel$')
    >>> exclusion_patterns(model, ('head',))
    Traceback (most recent call last):
    ...
    ValueError: MLP has no layer 'head'; its layer names: ['flatten', 'fc1', 'fc1_relu', 'classifier']
  """
  paths = layer_paths(model)
  kernels = kernel_paths(model)
  kind = type(model).__name__
  patterns = []
  for entry in exclude:
    if entry in paths:
      prefix = paths[entry] + '/'
      if not any(kernel.startswith(prefix) for kernel in kernels):
        raise ValueError(f'layer {entry!r} of {kind} holds no kernel')
      patterns.append('^' + re.escape(prefix))
    elif looks_like_layer_name(entry) and not any(
        re.search(entry, kernel) for kernel in kernels
    ):
      raise ValueError(
          f'{kind} has no layer {entry!r}; its {_valid_names(model, paths)}'
      )
    else:
      patterns.append(entry)
  return tuple(patterns)
