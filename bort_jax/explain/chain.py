r"""Layer chains: walk any sequential Flax NNX model one layer at a time.

The backtracking map :math:`g = f_1^{-1} \circ \cdots \circ f_L^{-1}` needs a
model that is a chain :math:`f = f_L \circ \cdots \circ f_1`. Two kinds of
model are chains:

* an ``nnx.Sequential`` (the user's own model): its ``layers`` may be
  modules or plain callables (``nnx.relu``,
  ``functools.partial(nnx.leaky_relu, negative_slope=0.5)``, a reshape
  lambda); a layer is addressed by its index (negative indices count from
  the end, as in Python);
* a :class:`~bort_jax.models.layers.NamedSequential` (the models of this
  package) or any module with ``layers`` and ``layer_names`` of the same
  length: a layer is addressed by its name or by its index.

The functions here are small and pure: :func:`layer_chain` reads the layers
and their names, :func:`resolve_layer` turns a name or index into an index
(with a ``ValueError`` that lists the valid ones), :func:`forward_to` runs the
chain up to a layer, and :func:`layer_shapes` gives every layer's input and
output shape with ``jax.eval_shape`` (no computation).

Example:
  >>> import functools, jax.numpy as jnp
  >>> from flax import nnx
  >>> from bort_jax.explain.chain import forward_to, layer_shapes, resolve_layer
  >>> model = nnx.Sequential(
  ...     nnx.Conv(1, 4, (2, 2), strides=2, rngs=nnx.Rngs(0)),
  ...     functools.partial(nnx.leaky_relu, negative_slope=0.5),
  ...     nnx.Conv(4, 16, (2, 2), strides=2, rngs=nnx.Rngs(1)))
  >>> resolve_layer(model, -2)
  1
  >>> forward_to(model, jnp.ones((2, 8, 8, 1)), 1).shape
  (2, 4, 4, 4)
  >>> layer_shapes(model, (8, 8, 1))[2]
  ((4, 4, 4), (2, 2, 16))
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = [
    'LayerChain',
    'LayerRef',
    'describe_layer',
    'forward_to',
    'layer_chain',
    'layer_label',
    'layer_shapes',
    'resolve_layer',
]

#: A layer address: a name (models with names) or an index (negative allowed).
LayerRef = str | int


class LayerChain(NamedTuple):
  """The layers of a sequential model, in the order they are applied.

  Attributes:
    layers: the modules or callables.
    names: one name per layer, or ``None`` when the model has no names (a
      plain ``nnx.Sequential``).
  """

  layers: tuple[Any, ...]
  names: tuple[str, ...] | None


def _not_a_chain_message(model: Any) -> str:
  return (
      f'{type(model).__name__} is neither an nnx.Sequential nor a '
      'NamedSequential, so its layers cannot be addressed by name or index. '
      'Name the layer to explain by a function from the input to its output '
      '(e.g. lambda x: model.features(x)), or pass None to explain the '
      "model's own output"
  )


def layer_chain(model: Any) -> LayerChain:
  """The ``(layers, names)`` of ``model``.

  Args:
    model: an ``nnx.Sequential``, a ``NamedSequential``, or any module with
      ``layers`` and ``layer_names`` of the same length.

  Returns:
    A :class:`LayerChain`; ``names`` is ``None`` for an unnamed
    ``nnx.Sequential``.

  Raises:
    ValueError: if the model is not a chain of layers (e.g. a ResNet).

  Example:
    >>> from flax import nnx
    >>> from bort_jax.explain.chain import layer_chain
    >>> layer_chain(nnx.Sequential(nnx.relu, nnx.relu)).names is None
    True
  """
  layers = getattr(model, 'layers', None)
  names = getattr(model, 'layer_names', None)
  if layers is not None and names is not None:
    layers, names = tuple(layers), tuple(names)
    if len(layers) != len(names):
      raise ValueError(
          f'{type(model).__name__} has {len(layers)} layers but '
          f'{len(names)} layer names'
      )
    return LayerChain(layers, tuple(str(n) for n in names))
  if isinstance(model, nnx.Sequential):
    return LayerChain(tuple(model.layers), None)
  raise ValueError(_not_a_chain_message(model))


def resolve_layer(model: Any, layer: LayerRef) -> int:
  """The index (``>= 0``) of the layer addressed by a name or an index.

  Args:
    model: a chain (see :func:`layer_chain`).
    layer: a layer name (models with names) or an int index; negative
      indices count from the end (``-1`` is the last layer).

  Returns:
    The index in ``layer_chain(model).layers``.

  Raises:
    ValueError: unknown name, index out of range, or a name given for a
      model without names.

  Example:
    >>> from flax import nnx
    >>> from bort_jax.explain.chain import resolve_layer
    >>> resolve_layer(nnx.Sequential(nnx.relu, nnx.relu, nnx.relu), -1)
    2
  """
  layers, names = layer_chain(model)
  count = len(layers)
  if isinstance(layer, str):
    if names is None:
      raise ValueError(
          f'unknown layer {layer!r}: {type(model).__name__} has no layer '
          'names; '
          f'address its layers by index, 0..{count - 1} (or -{count}..-1)'
      )
    try:
      return names.index(layer)
    except ValueError:
      raise ValueError(
          f'unknown layer {layer!r}; valid layer names: {list(names)}'
      ) from None
  if isinstance(layer, bool):
    raise ValueError(  # noqa: TRY004
        f'a layer is a name or an int index, got {layer!r}'
    )
  try:
    index = operator.index(layer)
  except TypeError:
    raise ValueError(
        'a layer is a name or an int index, got '
        f'{type(layer).__name__} {layer!r}'
    ) from None
  if not -count <= index < count:
    raise ValueError(
        f'layer index {index} is out of range: {type(model).__name__} has '
        f'{count} '
        f'layers (valid indices 0..{count - 1} or -{count}..-1)'
    )
  return index % count


def describe_layer(layer: Any) -> str:
  """A short description of a layer: its type, or a function's name.

  Example:
    >>> import functools
    >>> from flax import nnx
    >>> from bort_jax.explain.chain import describe_layer
    >>> describe_layer(functools.partial(nnx.leaky_relu, negative_slope=0.5))
    'functools.partial(leaky_relu, negative_slope=0.5)'
  """
  if isinstance(layer, functools.partial):
    arguments = [describe_layer(layer.func)]
    arguments += [repr(a) for a in layer.args]
    arguments += [f'{k}={v!r}' for k, v in layer.keywords.items()]
    return f'functools.partial({", ".join(arguments)})'
  if isinstance(layer, nnx.Module) or not callable(layer):
    return type(layer).__name__
  return getattr(layer, '__name__', type(layer).__name__)


def layer_label(model: Any, index: int) -> str:
  """How messages name a layer: ``layer 'conv1' (Conv)`` or ``layer 2 (Conv)``.

  Example:
    >>> from flax import nnx
    >>> from bort_jax.explain.chain import layer_label
    >>> layer_label(nnx.Sequential(nnx.relu), 0)
    'layer 0 (relu)'
  """
  layers, names = layer_chain(model)
  what = describe_layer(layers[index])
  if names is None:
    return f'layer {index} ({what})'
  return f'layer {names[index]!r} ({what})'


def _apply(layers: Sequence[Callable[..., Any]], x: jax.Array) -> jax.Array:
  for layer in layers:
    x = layer(x)
  return x


def forward_to(model: Any, x: jax.Array, layer: LayerRef) -> jax.Array:
  """Runs the model up to and including ``layer``; returns its output.

  Args:
    model: a chain (see :func:`layer_chain`).
    x: ``[N, ...]`` model inputs.
    layer: a layer name or index.

  Returns:
    The output of that layer.

  Raises:
    ValueError: bad layer address.
  """
  stop = resolve_layer(model, layer)
  return _apply(layer_chain(model).layers[: stop + 1], x)


def layer_shapes(
    model: Any, input_shape: Sequence[int], dtype: Any = jnp.float32
) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
  """Per-example ``(input shape, output shape)`` of every layer, abstractly.

  Runs the model under ``jax.eval_shape`` on one example (nothing is
  computed).

  Args:
    model: a chain (see :func:`layer_chain`).
    input_shape: one example's shape (no batch axis), e.g. ``(28, 28, 1)``.
    dtype: input dtype.

  Returns:
    One ``(in_shape, out_shape)`` pair per layer, in layer order.

  Raises:
    ValueError: if the model cannot run on inputs of that shape.
  """
  layer_chain(model)
  input_shape = tuple(int(s) for s in input_shape)

  def run(
      model, x
  ):  # The model is an argument: its parameters may be abstract.
    shapes = []
    for layer in layer_chain(model).layers:
      shapes.append(x)
      x = layer(x)
    shapes.append(x)
    return shapes

  try:
    structs = jax.eval_shape(
        run, model, jax.ShapeDtypeStruct((1, *input_shape), dtype)
    )
  except (TypeError, ValueError) as e:
    raise ValueError(
        f'inputs of shape {input_shape} do not fit {type(model).__name__}: {e}'
    ) from e
  shapes = [s.shape[1:] for s in structs]
  return list(itertools.pairwise(shapes))
