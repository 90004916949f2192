"""Multi-layer perceptron for MNIST-sized inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
from flax import nnx

from bort_jax.models.layers import Flatten, LeakyReLU, NamedSequential, ReLU

_ACTIVATIONS = ('relu', 'leaky_relu')


def _make_activation(activation: str, slope: float) -> tuple[str, nnx.Module]:
  """Returns ``(short_name, layer)`` for ``'relu'`` or ``'leaky_relu'``."""
  if activation == 'relu':
    return 'relu', ReLU()
  if activation == 'leaky_relu':
    return 'lrelu', LeakyReLU(slope)
  raise ValueError(
      f'unknown activation {activation!r}; valid activations: {list(_ACTIVATIONS)}'
  )


class MLP(NamedSequential):
  """Fully connected classifier; the paper's MNIST MLP is 784-256-10.

  The input is flattened first, so NHWC images ``(N, 28, 28, 1)`` and flat
  vectors ``(N, 784)`` both work. Layers (default config)::

    flatten, fc1, fc1_relu, classifier

  With ``hidden_features=(h1, h2, ...)`` there is one ``fc{i}`` and one
  activation ``fc{i}_relu`` (``fc{i}_lrelu`` for ``activation='leaky_relu'``)
  per hidden layer.

  Args:
    in_features: size of the flattened input (784 for MNIST).
    hidden_features: widths of the hidden layers; its length is the depth.
    num_classes: number of output logits.
    activation: ``'relu'`` or ``'leaky_relu'`` (exactly invertible).
    leaky_relu_slope: negative slope when ``activation='leaky_relu'``.
    dtype: computation dtype (``None``: that of the input).
    param_dtype: parameter dtype.
    rngs: random number generators for the initialisation.

  Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from bort_jax.models import MLP
    >>> model = MLP(rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 28, 28, 1))).shape
    (2, 10)
    >>> model.layer_names
    ('flatten', 'fc1', 'fc1_relu', 'classifier')
  """

  def __init__(
      self,
      in_features: int = 784,
      hidden_features: Sequence[int] = (256,),
      num_classes: int = 10,
      *,
      activation: str = 'relu',
      leaky_relu_slope: float = 0.5,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      rngs: nnx.Rngs,
  ):
    layers: list[tuple[str, nnx.Module]] = [('flatten', Flatten())]
    width = in_features
    for i, hidden in enumerate(hidden_features, start=1):
      layers.append(
          (
              f'fc{i}',
              nnx.Linear(
                  width, hidden, dtype=dtype, param_dtype=param_dtype, rngs=rngs
              ),
          )
      )
      act_name, act = _make_activation(activation, leaky_relu_slope)
      layers.append((f'fc{i}_{act_name}', act))
      width = hidden
    layers.append(
        (
            'classifier',
            nnx.Linear(
                width,
                num_classes,
                dtype=dtype,
                param_dtype=param_dtype,
                rngs=rngs,
            ),
        )
    )
    super().__init__(layers)
    self.in_features = in_features
    self.num_classes = num_classes
