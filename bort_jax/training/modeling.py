"""The config's model, with input-shape arguments derived from its data set."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import ml_collections
from flax import nnx

from bort_jax import models
from bort_jax.training import input_pipeline

COMPUTE_DTYPES = {'float32': None, 'bfloat16': jnp.bfloat16}

# Models told their input's size and channels; the MLP is told its fan-in,
# the ResNets their channels only.
_SIZED_MODELS = (
    'invertible_cnn',
    'bort_invertible_cnn',
    'vgg16',
    'invertible_vgg16',
    'deit_s',
    'vit_tiny_test',
)


def input_shape_kwargs(
    model: str, image_shape: tuple[int, int, int]
) -> dict[str, Any]:
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
  if model in _SIZED_MODELS:
    return {'image_size': height, 'in_channels': channels}
  return {'in_channels': channels}


def model_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """All constructor arguments but ``num_classes`` and ``rngs``.

  Input-shape arguments come from the data set; ``dtype`` from
  ``config.dtype`` (float32: the model's default); ``config.model_kwargs``
  overrides both.
  """
  spec = input_pipeline.dataset_spec(config)
  kwargs = input_shape_kwargs(config.model, spec.image_shape)
  if COMPUTE_DTYPES[config.dtype] is not None:
    kwargs['dtype'] = COMPUTE_DTYPES[config.dtype]
  kwargs.update(config.model_kwargs.to_dict())
  return kwargs


def model_from_config(
    config: ml_collections.ConfigDict, *, rngs: nnx.Rngs | None = None
) -> nnx.Module:
  """Builds the config's model (parameters float32, compute in ``config.dtype``).

  Args:
    config: uses ``model``, ``dataset``, ``image_size``, ``dtype`` and
      ``model_kwargs``.
    rngs: initialisation RNGs (default: ``nnx.Rngs(config.seed)``).

  Returns:
    :func:`bort_jax.models.create_model` of the config's model.

  Example:
    >>> from bort_jax import configs
    >>> model = model_from_config(configs.get_config('mnist_mlp'))
    >>> model(jnp.zeros((1, 28, 28, 1))).shape
    (1, 10)
  """
  spec = input_pipeline.dataset_spec(config)
  rngs = nnx.Rngs(config.seed) if rngs is None else rngs
  return models.create_model(
      config.model,
      num_classes=spec.num_classes,
      rngs=rngs,
      **model_kwargs(config),
  )
