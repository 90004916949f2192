"""Pieces shared by the measurements: layers, means, timing, predictions."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = [
    'mean',
    'per_example',
    'predict',
    'representation_layers',
    'timed',
    'weighted_layers',
]


def weighted_layers(model: Any) -> list[int]:
  """Indices of the Dense/Conv layers, the classifier (last one) excluded."""
  indices = [
      i
      for i, layer in enumerate(model.layers)
      if isinstance(layer, (nnx.Linear, nnx.Conv))
  ]
  return indices[:-1]


def representation_layers(model: Any) -> list[str]:
  """The name of each conv/dense layer's output, after its activation.

  Example: ``conv1_lrelu, down1_lrelu, conv2_lrelu, down2_lrelu`` for the
  CNNs, ``fc1_relu`` for the MLP.
  """
  names = model.layer_names
  out = []
  for i in weighted_layers(model):
    follower = model.layers[i + 1] if i + 1 < len(model.layers) else None
    activation = (
        follower is not None
        and not isinstance(follower, (nnx.Linear, nnx.Conv))
        and 'relu' in names[i + 1]
    )
    out.append(names[i + 1] if activation else names[i])
  return out


def per_example(values: jax.Array) -> np.ndarray:
  """``values`` on the host, in float64."""
  return np.asarray(jax.device_get(values), np.float64)


def mean(values: jax.Array) -> float:
  """The mean over the examples, as a Python float."""
  return float(np.mean(per_example(values)))


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
  """``fn()`` (waited for) and the seconds it took."""
  start = time.perf_counter()
  out = jax.block_until_ready(fn())
  return out, time.perf_counter() - start


@jax.jit
def predict(model, x):
  """The predicted classes of ``x``."""
  return jnp.argmax(model(x), -1)
