"""Layer types for the invertible models, and the named layer sequence.

The invertible models (``MLP``, ``InvertibleCNN``, ``VGG16``/``InvertibleVGG16``)
are built as an ordered sequence of named layers so that an explainer can walk
them one layer at a time and apply each layer's (approximate) inverse. Every
layer in such a sequence is an instance of one of :data:`SEQUENCE_LAYER_TYPES`:

- ``nnx.Linear``: kernel ``(in, out)``, optional bias ``(out,)``.
- ``nnx.Conv``: kernel ``(kh, kw, in, out)``, optional bias ``(out,)``; in the
  models of this package ``strides`` is a ``(sh, sw)`` tuple and ``padding``
  an explicit tuple of ``(low, high)`` pairs, one per spatial axis, so an
  inverse can read both off the layer.
- :class:`LeakyReLU`: ``max(x, 0) + slope * min(x, 0)``; exact inverse for
  ``slope > 0``.
- :class:`ReLU`.
- :class:`Flatten`: ``(N, ...) -> (N, prod(...))``.
- :class:`MaxPool` and :class:`AvgPool`.
- ``nnx.Dropout``: the identity in eval mode (``model.eval()``).

None of these layers holds state other than parameters; none is a BatchNorm.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import jax
import jax.numpy as jnp
from flax import nnx

Padding = Union[str, Sequence[tuple[int, int]]]


def _as_pair(value: int | Sequence[int]) -> tuple[int, int]:
  """Returns ``(value, value)`` for an int, ``tuple(value)`` otherwise."""
  if isinstance(value, int):
    return (value, value)
  pair = tuple(int(v) for v in value)
  if len(pair) != 2:
    raise ValueError(f'expected an int or a pair of ints, got {value!r}')
  return pair


class LeakyReLU(nnx.Module):
  """Leaky rectifier ``y = x if x >= 0 else slope * x``.

  With ``slope > 0`` it is a bijection; its inverse is
  ``max(y, 0) + min(y, 0) / slope``.

  Args:
    slope: the slope for negative inputs (0.5 in the Bort authors' invertible
      networks).

  Example:
    >>> import jax.numpy as jnp
    >>> from bort_jax.models import LeakyReLU
    >>> LeakyReLU(0.5)(jnp.array([-2.0, 3.0]))
    Array([-1.,  3.], dtype=float32)
  """

  def __init__(self, slope: float = 0.5):
    self.slope = float(slope)

  def __call__(self, x: jax.Array) -> jax.Array:
    return jnp.where(x >= 0, x, jnp.asarray(self.slope, x.dtype) * x)


class ReLU(nnx.Module):
  """Rectifier ``y = max(x, 0)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from bort_jax.models import ReLU
    >>> ReLU()(jnp.array([-2.0, 3.0]))
    Array([0., 3.], dtype=float32)
  """

  def __call__(self, x: jax.Array) -> jax.Array:
    return jax.nn.relu(x)


class Flatten(nnx.Module):
  """Flattens every axis but the leading batch axis.

  It keeps no record of the input shape: an inverse needs the shape of the
  layer's input, which it gets by running the model forward.

  Example:
    >>> import jax.numpy as jnp
    >>> from bort_jax.models import Flatten
    >>> Flatten()(jnp.zeros((2, 7, 7, 64))).shape
    (2, 3136)
  """

  def __call__(self, x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1)


class _Pool(nnx.Module):
  """Window, strides and padding shared by the pooling layers."""

  def __init__(
      self,
      window: int | Sequence[int] = 2,
      strides: int | Sequence[int] | None = None,
      padding: Padding = 'VALID',
  ):
    self.window = _as_pair(window)
    self.strides = self.window if strides is None else _as_pair(strides)
    self.padding = (
        padding
        if isinstance(padding, str)
        else tuple(tuple(p) for p in padding)
    )


class MaxPool(_Pool):
  """2D max pooling over NHWC inputs.

  Args:
    window: pooling window, an int or ``(height, width)``.
    strides: window strides, an int or ``(height, width)``; defaults to
      ``window`` (non-overlapping windows).
    padding: ``'VALID'``, ``'SAME'`` or explicit ``((low, high), (low, high))``
      pairs; padded positions never win the max.

  Example:
    >>> import jax.numpy as jnp
    >>> from bort_jax.models import MaxPool
    >>> MaxPool(2)(jnp.zeros((1, 8, 8, 3))).shape
    (1, 4, 4, 3)
  """

  def __call__(self, x: jax.Array) -> jax.Array:
    return nnx.max_pool(x, self.window, self.strides, self.padding)


class AvgPool(_Pool):
  """2D average pooling over NHWC inputs (padding counts as zeros).

  Args:
    window: pooling window, an int or ``(height, width)``.
    strides: window strides, an int or ``(height, width)``; defaults to
      ``window`` (non-overlapping windows).
    padding: ``'VALID'``, ``'SAME'`` or explicit ``((low, high), (low, high))``
      pairs.

  Example:
    >>> import jax.numpy as jnp
    >>> from bort_jax.models import AvgPool
    >>> AvgPool(2)(jnp.ones((1, 8, 8, 3))).shape
    (1, 4, 4, 3)
  """

  def __call__(self, x: jax.Array) -> jax.Array:
    return nnx.avg_pool(x, self.window, self.strides, self.padding)


#: The layer types a :class:`NamedSequential` may hold.
SEQUENCE_LAYER_TYPES: tuple[type, ...] = (
    nnx.Linear,
    nnx.Conv,
    LeakyReLU,
    ReLU,
    Flatten,
    MaxPool,
    AvgPool,
    nnx.Dropout,
)


class NamedSequential(nnx.Module):
  """An ordered sequence of named layers, applied one after the other.

  Base class of the invertible models. ``layers[i]`` is the layer called
  ``layer_names[i]``; each is an instance of one of
  :data:`SEQUENCE_LAYER_TYPES`, so an explainer can invert the model layer by
  layer. Parameter paths are ``('layers', i, 'kernel')`` etc.

  Args:
    named_layers: ``(name, layer)`` pairs in the order they are applied. Names
      must be unique.

  Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from bort_jax.models import Flatten, LeakyReLU, NamedSequential
    >>> rngs = nnx.Rngs(0)
    >>> net = NamedSequential([
    ...     ('flatten', Flatten()),
    ...     ('fc1', nnx.Linear(12, 4, rngs=rngs)),
    ...     ('fc1_lrelu', LeakyReLU(0.5)),
    ...     ('classifier', nnx.Linear(4, 2, rngs=rngs)),
    ... ])
    >>> net.layer_names
    ('flatten', 'fc1', 'fc1_lrelu', 'classifier')
    >>> net.forward_to(jnp.ones((1, 2, 2, 3)), 'fc1').shape
    (1, 4)
  """

  def __init__(self, named_layers: Sequence[tuple[str, nnx.Module]]):
    named_layers = list(named_layers)
    names = tuple(name for name, _ in named_layers)
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
      raise ValueError(f'layer names must be unique; repeated: {duplicates}')
    for name, layer in named_layers:
      if not isinstance(layer, SEQUENCE_LAYER_TYPES):
        raise TypeError(
            f'layer {name!r} is a {type(layer).__name__}; allowed layer types: '
            f'{[t.__name__ for t in SEQUENCE_LAYER_TYPES]}'
        )
    self.layer_names: tuple[str, ...] = names
    self.layers = nnx.List([layer for _, layer in named_layers])

  def __call__(self, x: jax.Array) -> jax.Array:
    for layer in self.layers:
      x = layer(x)
    return x

  def layer_index(self, layer_name: str) -> int:
    """Returns the position of ``layer_name`` in :attr:`layers`.

    Raises:
      ValueError: if there is no layer of that name; the message lists the
        valid names.
    """
    try:
      return self.layer_names.index(layer_name)
    except ValueError:
      raise ValueError(
          f'unknown layer {layer_name!r}; valid layer names: '
          f'{list(self.layer_names)}'
      ) from None

  def get_layer(self, layer_name: str) -> nnx.Module:
    """Returns the layer called ``layer_name``."""
    return self.layers[self.layer_index(layer_name)]

  def kernel_pattern(self, layer_name: str) -> str:
    """The regular expression naming ``layer_name``'s kernel in the params.

    Parameter paths of a :class:`NamedSequential` read ``layers/<i>/kernel``;
    the pattern matches exactly that path. Pass it to
    :func:`bort_jax.kernels_except` to leave the layer out of the Bort term
    (a config's ``bort_exclude`` takes the layer name itself).

    Raises:
      ValueError: if there is no layer of that name, or it has no kernel.

    Example:
      >>> from flax import nnx
      >>> from bort_jax.models import Flatten, NamedSequential
      >>> head = nnx.Linear(4, 2, rngs=nnx.Rngs(0))
      >>> net = NamedSequential([('flatten', Flatten()), ('classifier', head)])
      >>> net.kernel_pattern('classifier')
      '^layers/1/kernel$'
    """
    index = self.layer_index(layer_name)
    kind = type(self.layers[index]).__name__
    if not hasattr(self.layers[index], 'kernel'):
      raise ValueError(f'layer {layer_name!r} ({kind}) has no kernel')
    return f'^layers/{index}/kernel$'

  def patch_matrix_shapes(self) -> dict[str, tuple[int, int]]:
    """``{layer name: (fan_in, units)}`` of every Dense and Conv layer.

    A layer's matrix per patch is ``M = kernel.reshape(-1, units)``, of shape
    ``[fan_in, units]`` (``fan_in = kh * kw * C_in`` for a convolution). The
    transposed weights can recover a patch exactly only when
    ``units >= fan_in`` (see :class:`~bort_jax.models.cnn.BortInvertibleCNN`).

    Example:
      >>> from flax import nnx
      >>> from bort_jax.models import Flatten, NamedSequential
      >>> net = NamedSequential([
      ...     ('conv', nnx.Conv(1, 16, (3, 3), rngs=nnx.Rngs(0))),
      ...     ('flatten', Flatten())])
      >>> net.patch_matrix_shapes()
      {'conv': (9, 16)}
    """
    shapes = {}
    for name, layer in zip(self.layer_names, self.layers):
      if isinstance(layer, (nnx.Linear, nnx.Conv)):
        kernel_shape = layer.kernel.shape
        fan_in = 1
        for size in kernel_shape[:-1]:
          fan_in *= int(size)
        shapes[name] = (fan_in, int(kernel_shape[-1]))
    return shapes

  def forward_to(self, x: jax.Array, layer_name: str) -> jax.Array:
    """Runs the model up to and including ``layer_name``; returns its output.

    Args:
      x: the model input.
      layer_name: one of :attr:`layer_names`.

    Raises:
      ValueError: if there is no layer of that name.
    """
    stop = self.layer_index(layer_name)
    for layer in self.layers[: stop + 1]:
      x = layer(x)
    return x

  def intermediates(
      self, x: jax.Array, up_to: str | None = None
  ) -> dict[str, jax.Array]:
    """Returns every layer's output, keyed by layer name, in layer order.

    Args:
      x: the model input.
      up_to: if given, stop after this layer.

    Example:
      >>> from flax import nnx
      >>> import jax.numpy as jnp
      >>> from bort_jax.models import Flatten, NamedSequential, ReLU
      >>> net = NamedSequential([('flatten', Flatten()), ('relu', ReLU())])
      >>> list(net.intermediates(jnp.ones((1, 2, 2))))
      ['flatten', 'relu']
    """
    stop = len(self.layers) - 1 if up_to is None else self.layer_index(up_to)
    outputs = {}
    for name, layer in zip(self.layer_names[: stop + 1], self.layers):
      x = layer(x)
      outputs[name] = x
    return outputs
