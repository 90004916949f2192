"""The training configs: ``ml_collections`` ConfigDicts, one file per recipe.

:mod:`~bort_jax.configs.base` defines every field with its default and the
validation; each recipe file's ``get_config()`` starts from it and changes
only what differs. ``bort-train --config NAME`` takes a packaged recipe by
name (:data:`CONFIG_NAMES`), ``--config path/to/file.py`` any file with a
``get_config()``, and ``--config.FIELD=VALUE`` overrides a field
(:mod:`~bort_jax.configs.overrides`: :func:`load`, :func:`override`).

Example:
  >>> from bort_jax.configs import get_config, replace
  >>> config = get_config('mnist_cnn')
  >>> config.model, config.optimizer
  ('invertible_cnn', 'bort_adamw')
  >>> replace(config, epochs=3).epochs
  3
"""

from __future__ import annotations

import importlib
from pathlib import Path

from bort_jax._extras import extra_imports

with extra_imports('bort_jax.configs', 'train'):
  import ml_collections

  from bort_jax.configs.base import EXECUTION_FIELDS
  from bort_jax.configs.base import OPTIMIZER_NAMES
  from bort_jax.configs.base import field_names
  from bort_jax.configs.base import from_dict
  from bort_jax.configs.base import replace
  from bort_jax.configs.base import to_dict
  from bort_jax.configs.base import validate
  from bort_jax.configs.overrides import apply_overrides
  from bort_jax.configs.overrides import assignments_to_overrides
  from bort_jax.configs.overrides import check_options
  from bort_jax.configs.overrides import check_override_fields
  from bort_jax.configs.overrides import config_source
  from bort_jax.configs.overrides import load
  from bort_jax.configs.overrides import override
  from bort_jax.configs.overrides import set_values

#: The packaged recipes, the names :func:`get_config` accepts.
CONFIG_NAMES: tuple[str, ...] = (
    'mnist_mlp',
    'mnist_cnn',
    'mnist_invertible_cnn',
    'cifar10_resnet18',
    'imagenet_resnet50',
    'imagenet_deit_s',
    'imagenet_vgg16',
)


def _check_name(name: str) -> None:
  if name not in CONFIG_NAMES:
    raise ValueError(
        f'unknown config {name!r}; valid configs: {list(CONFIG_NAMES)}'
    )


def config_path(name: str) -> Path:
  """The file of the packaged recipe ``name`` (for ``--config``).

  Raises:
    ValueError: unknown name; the message lists the valid ones.
  """
  _check_name(name)
  return Path(__file__).with_name(f'{name}.py')


def get_config(name: str) -> ml_collections.ConfigDict:
  """The packaged recipe ``name``, validated.

  Raises:
    ValueError: unknown name; the message lists the valid ones.
  """
  _check_name(name)
  module = importlib.import_module(f'{__name__}.{name}')
  return validate(module.get_config())


__all__ = [
    'CONFIG_NAMES',
    'EXECUTION_FIELDS',
    'OPTIMIZER_NAMES',
    'apply_overrides',
    'assignments_to_overrides',
    'check_options',
    'check_override_fields',
    'config_path',
    'config_source',
    'field_names',
    'from_dict',
    'get_config',
    'load',
    'override',
    'replace',
    'set_values',
    'to_dict',
    'validate',
]
