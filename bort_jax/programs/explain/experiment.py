r"""Shared pieces of the explainability program: data and model helpers.

:class:`Normalization` (pixels <-> the network's normalised inputs),
:func:`evaluate_accuracy`, :func:`class_means` (the reference of the
target-likeness score), :func:`top_conv_layer` and :func:`gram_matrices`.
The measurements are in :mod:`bort_jax.programs.explain.measure`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bort_jax import explain

__all__ = [
    'Normalization',
    'class_means',
    'evaluate_accuracy',
    'gram_matrices',
    'top_conv_layer',
]


@dataclasses.dataclass(frozen=True)
class Normalization:
  """Per-channel normalisation ``x = (p - mean) / std`` of pixels ``p`` in [0, 1]."""

  mean: tuple[float, ...]
  std: tuple[float, ...]

  def to_pixels(self, x: jax.Array) -> jax.Array:
    return x * jnp.asarray(self.std, x.dtype) + jnp.asarray(self.mean, x.dtype)

  def from_pixels(self, p: jax.Array) -> jax.Array:
    return (p - jnp.asarray(self.mean, p.dtype)) / jnp.asarray(
        self.std, p.dtype
    )

  @property
  def bounds(self) -> tuple[float, float]:
    """The normalised values of black and white (single channel)."""
    return (
        (0.0 - self.mean[0]) / self.std[0],
        (1.0 - self.mean[0]) / self.std[0],
    )


def evaluate_accuracy(
    model: nnx.Module,
    images: jax.Array,
    labels: jax.Array,
    batch_size: int = 1000,
) -> float:
  """Top-1 accuracy of ``model`` on ``images`` (normalised) and ``labels``."""
  predict = jax.jit(lambda m, x: jnp.argmax(m(x), -1))
  correct = 0
  for start in range(0, len(labels), batch_size):
    stop = start + batch_size
    correct += int(
        jnp.sum(predict(model, images[start:stop]) == labels[start:stop])
    )
  return correct / len(labels)


def class_means(
    pixels: np.ndarray, labels: np.ndarray, num_classes: int
) -> np.ndarray:
  """``[K, H, W, C]`` mean image of every class (``pixels`` in [0, 1])."""
  return np.stack(
      [pixels[labels == k].mean(axis=0) for k in range(num_classes)]
  )


def top_conv_layer(model: Any, input_shape: tuple[int, ...]) -> str:
  """The last layer with a spatial ``(h, w, C)`` output: the top feature map.

  For a model without one (the MLP), the classifier's input layer.
  """
  shapes = explain.chain.layer_shapes(model, input_shape)
  spatial = [
      name for name, (_, out) in zip(model.layer_names, shapes) if len(out) == 3
  ]
  return spatial[-1] if spatial else explain.classifier_input_layer(model)


def gram_matrices(model: Any) -> dict[str, np.ndarray]:
  r"""The Gram matrix of every Dense/Conv layer, on the smaller side.

  With ``M = kernel.reshape(fan_in, units)`` (columns = units): ``M^T M``
  (``units x units``, torch's :math:`W W^\top`: entry ``(i, j)`` is the inner
  product of units i and j) when ``units <= fan_in``, else ``M M^T``
  (``fan_in x fan_in``, torch's :math:`W^\top W`), the only one that a
  bounded orthogonal layer makes a multiple of the identity.

  Returns:
    ``{layer name: square Gram matrix}``.
  """
  grams = {}
  for name, layer in zip(model.layer_names, model.layers):
    if isinstance(layer, (nnx.Linear, nnx.Conv)):
      kernel = np.asarray(layer.kernel[...], np.float64)
      matrix = kernel.reshape(-1, kernel.shape[-1])
      grams[name] = (
          matrix.T @ matrix
          if matrix.shape[1] <= matrix.shape[0]
          else (matrix @ matrix.T)
      )
  return grams
