"""The config's model, with input-shape arguments derived from its data set,
and the kernels its ``bort_exclude`` leaves out of the Bort term."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import ml_collections
from flax import nnx

from bort_jax import models
from bort_jax.training import input_pipeline
from bort_jax.training.errors import ConfigError

COMPUTE_DTYPES = {'float32': None, 'bfloat16': jnp.bfloat16}


def input_shape_kwargs(
    model: str, image_shape: tuple[int, int, int]
) -> dict[str, Any]:
  """The constructor arguments that tell ``model`` its input shape (the
  catalogue's :func:`bort_jax.models.input_kwargs`).

  Example:
    >>> input_shape_kwargs('mlp', (28, 28, 1))
    {'in_features': 784}
    >>> input_shape_kwargs('resnet18', (32, 32, 3))
    {'in_channels': 3}
  """
  return models.input_kwargs(model, image_shape)


def model_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """All constructor arguments but ``num_classes`` and ``rngs``.

  Input-shape arguments come from the data set (as the model's catalogue
  entry asks for them); ``dtype`` from ``config.dtype`` (float32: the
  model's default); ``config.model_kwargs`` overrides both.

  Raises:
    ConfigError: an unknown model; the message lists the valid names.
  """
  spec = input_pipeline.dataset_spec(config)
  try:
    kwargs = models.input_kwargs(config.model, spec.image_shape)
  except ValueError as error:  # an unknown model; the message lists them
    raise ConfigError(str(error)) from None
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


def bort_exclude_patterns(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The config's ``bort_exclude`` as patterns for :func:`bort_jax.kernels_except`.

  Layer names (``'classifier'``) are resolved by the config's model
  (:func:`bort_jax.models.exclusion_patterns`, on a shape-only build);
  regular expressions over kernel paths (``'^layers/9/kernel$'``) are kept
  as they are. Both the optimizer's Bort mask and the orthogonality figures
  the training loop logs use these patterns.

  Args:
    config: uses ``bort_exclude``, and to resolve layer names ``model``,
      ``dataset``, ``image_size``, ``dtype`` and ``model_kwargs``.

  Returns:
    One pattern per entry (empty: Bort constrains every kernel).

  Raises:
    ConfigError: a name that is no layer of the model (the message lists
      the valid names), a layer without a kernel, or a model that cannot be
      built from the config.

  Example:
    >>> from bort_jax import configs
    >>> config = configs.get_config('mnist_invertible_cnn')
    >>> tuple(config.bort_exclude), bort_exclude_patterns(config)
    (('classifier',), ('^layers/9/',))
  """
  exclude = tuple(config.bort_exclude)
  if not any(models.looks_like_layer_name(entry) for entry in exclude):
    return exclude
  try:
    model = nnx.eval_shape(lambda: model_from_config(config, rngs=nnx.Rngs(0)))
  except (TypeError, ValueError, ArithmeticError) as error:
    raise ConfigError(
        f'model {config.model!r} cannot be built from the config (to find '
        f'the bort_exclude layers {list(exclude)}): '
        f'{type(error).__name__}: {error}'
    ) from error
  try:
    return models.exclusion_patterns(model, exclude)
  except ValueError as error:
    raise ConfigError(f'bort_exclude: {error}') from None
