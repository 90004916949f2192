"""Checks of a config against its data, its devices and its model, made
before a run writes anything.

:func:`bort_jax.configs.validate` checks each field alone; what depends on
the data set's size, the device and process counts or the model's
constructor is checked here, with a
:class:`~bort_jax.training.errors.ConfigError` naming the field and the
fix.

Example:
  >>> check_batch_sizes(batch_size=128, eval_batch_size=100,
  ...                   train_examples=100, devices=1, processes=1)
  Traceback (most recent call last):
  ...
  bort_jax.training.errors.ConfigError: batch_size 128 is larger than the 100 ...
"""

from __future__ import annotations

import inspect
from typing import Any

import ml_collections

from bort_jax.training.errors import ConfigError


def check_batch_sizes(
    *,
    batch_size: int,
    eval_batch_size: int,
    train_examples: int,
    devices: int,
    processes: int,
    local_devices: int | None = None,
    pmap: bool = False,
) -> None:
  """Raises if the batches cannot be formed or spread over the devices.

  Args:
    batch_size: the global train batch size.
    eval_batch_size: the global eval batch size.
    train_examples: examples in the train split (after any subset).
    devices: ``jax.device_count()`` (the batch is split over all of them).
    processes: ``jax.process_count()``.
    local_devices: ``jax.local_device_count()`` (``pmap`` splits each
      process' rows over its own devices); default ``devices``.
    pmap: whether the run uses ``parallel='pmap'``.

  Raises:
    ConfigError: ``batch_size > train_examples`` (an epoch would have no
      step), or a batch size not divisible by the process count or the
      device count.
  """
  if train_examples < batch_size:
    raise ConfigError(
        f'batch_size {batch_size} is larger than the {train_examples} '
        'training examples; lower --batch-size or use more examples '
        '(train_examples)'
    )
  local_devices = devices if local_devices is None else local_devices
  for name, size in (
      ('batch_size', batch_size),
      ('eval_batch_size', eval_batch_size),
  ):
    if size % processes:
      raise ConfigError(
          f'{name} {size} is not divisible by the {processes} processes'
      )
    per_device = size // processes % local_devices if pmap else size % devices
    if per_device:
      count = local_devices if pmap else devices
      raise ConfigError(
          f'{name} {size} is not divisible by the {count} devices it is '
          f'split over; use a multiple of {count}'
      )


def _parameters(constructor: Any) -> dict[str, inspect.Parameter] | None:
  """The keyword parameters of a constructor or function, or ``None`` when
  it takes ``**kwargs`` (then anything may be accepted)."""
  target = (
      constructor.__init__ if isinstance(constructor, type) else constructor
  )
  try:
    parameters = inspect.signature(target).parameters
  except (TypeError, ValueError):
    return None
  if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
    return None
  return {
      name: p
      for name, p in parameters.items()
      if name != 'self' and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
  }


def model_constructor(name: str) -> Any:
  """The class (or function) ``create_model(name, ...)`` ends up calling
  (the catalogue's :func:`bort_jax.models.model_builder`).

  Raises:
    ConfigError: an unknown name; the message lists the valid names.
  """
  from bort_jax.models import (  # pylint: disable=import-outside-toplevel
      registry,
  )

  try:
    return registry.model_builder(name)
  except ValueError as error:
    raise ConfigError(str(error)) from None


def check_model_kwargs(
    config: ml_collections.ConfigDict, kwargs: dict[str, Any] | None = None
) -> None:
  """Raises if the model's constructor does not take ``model_kwargs``.

  Args:
    config: uses ``model`` and ``model_kwargs``.
    kwargs: every keyword the run passes (default ``config.model_kwargs``).

  Raises:
    ConfigError: an unknown model, or an argument its constructor does not
      take; the message lists those it takes.
  """
  constructor = model_constructor(config.model)
  parameters = _parameters(constructor)
  if parameters is None:
    return
  given = dict(config.model_kwargs) if kwargs is None else kwargs
  unknown = sorted(set(given) - set(parameters) - {'num_classes', 'rngs'})
  if unknown:
    valid = sorted(set(parameters) - {'num_classes', 'rngs'})
    raise ConfigError(
        f'model_kwargs: {config.model} takes no argument(s) {unknown}; '
        f'its arguments: {valid}'
    )


def model_build_error(
    config: ml_collections.ConfigDict, error: TypeError
) -> ConfigError | None:
  """A :class:`ConfigError` for a ``TypeError`` from building the model
  with the config's arguments (``None`` if the error is not about them)."""
  text = str(error)
  if 'argument' not in text:
    return None
  return ConfigError(
      f'model {config.model!r} cannot be built with model_kwargs '
      f'{dict(config.model_kwargs)}: {text}'
  )


__all__ = [
    'check_batch_sizes',
    'check_model_kwargs',
    'model_build_error',
    'model_constructor',
]
