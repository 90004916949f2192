"""The config's model, with input-shape arguments derived from its data set."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import nnx

from bort_jax import models
from bort_jax.training import input_pipeline
from bort_jax.training.config import TrainConfig

COMPUTE_DTYPES = {'float32': None, 'bfloat16': jnp.bfloat16}


def input_shape_kwargs(model: str, image_shape: tuple[int, int, int]) -> dict[str, Any]:
  """The constructor arguments that tell ``model`` its input shape.

  Example:
    >>> input_shape_kwargs('mlp', (28, 28, 1))
    {'in_features': 784}
    >>> input_shape_kwargs('resnet18', (32, 32, 3))
    {'in_channels': 3}
  """
  height, width, channels = image_shape
  if model == 'mlp':
    return {'in_features': height * width * channels}
  if model in ('invertible_cnn', 'vgg16', 'invertible_vgg16', 'deit_s', 'vit_tiny_test'):
    return {'image_size': height, 'in_channels': channels}
  return {'in_channels': channels}


def model_kwargs(config: TrainConfig) -> dict[str, Any]:
  """All constructor arguments but ``num_classes`` and ``rngs``.

  Input-shape arguments come from the data set; ``dtype`` from
  ``config.dtype`` (float32: the model's default); ``config.model_kwargs``
  overrides both.
  """
  spec = input_pipeline.dataset_spec(config)
  kwargs = input_shape_kwargs(config.model, spec.image_shape)
  if COMPUTE_DTYPES[config.dtype] is not None:
    kwargs['dtype'] = COMPUTE_DTYPES[config.dtype]
  kwargs.update(config.model_kwargs)
  return kwargs


def create_model(config: TrainConfig, *, rngs: nnx.Rngs | None = None) -> nnx.Module:
  """Builds the config's model (parameters float32, compute in ``config.dtype``).

  Args:
    config: uses ``model``, ``dataset``, ``image_size``, ``dtype`` and
      ``model_kwargs``.
    rngs: initialisation RNGs (default: ``nnx.Rngs(config.seed)``).

  Example:
    >>> from bort_jax.training.config import TrainConfig
    >>> model = create_model(TrainConfig(dataset='mnist', model='mlp'))
    >>> model(jnp.zeros((1, 28, 28, 1))).shape
    (1, 10)
  """
  spec = input_pipeline.dataset_spec(config)
  rngs = nnx.Rngs(config.seed) if rngs is None else rngs
  return models.create_model(
      config.model, num_classes=spec.num_classes, rngs=rngs, **model_kwargs(config))
