"""The experiments' configs, one module per config, each with ``get_config()``.

``experiments/configs/`` in the source tree re-exports these modules, so a
reader finds them there; they live in the package so that ``bort-train
--config NAME`` works from any directory after ``pip install``.

Example:
  >>> config = get_config('mnist_cnn')
  >>> config.model, config.optimizer
  ('invertible_cnn', 'bort_adamw')
"""

from __future__ import annotations

import importlib

from bort_jax.training.config import TrainConfig

#: The names :func:`get_config` accepts.
CONFIG_NAMES: tuple[str, ...] = (
    'mnist_mlp',
    'mnist_cnn',
    'cifar10_resnet18',
    'imagenet_resnet50',
    'imagenet_deit_s',
    'imagenet_vgg16',
)


def get_config(name: str) -> TrainConfig:
  """The config called ``name``.

  Raises:
    ValueError: unknown name; the message lists the valid ones.
  """
  if name not in CONFIG_NAMES:
    raise ValueError(f'unknown config {name!r}; valid configs: {list(CONFIG_NAMES)}')
  return importlib.import_module(f'{__name__}.{name}').get_config()
