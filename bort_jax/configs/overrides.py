"""Configs from a name or a file, with command-line overrides applied.

A config is named by a packaged recipe (:data:`bort_jax.configs.CONFIG_NAMES`)
or a Python file whose ``get_config()`` returns an
``ml_collections.ConfigDict`` (``path/to/file.py``, ``path/to/file.py:ARG``).
Its fields are then overridden in three ways, applied in this order (later
ones win):

* typed values (a program's own flags: ``--gamma 0.5`` is the float 0.5),
  set directly on the ConfigDict (:func:`set_values`);
* ``--set FIELD=VALUE`` assignments, an alias of the next
  (:func:`assignments_to_overrides`);
* ``--config.FIELD=VALUE`` overrides, parsed by
  ``ml_collections.config_flags`` to the field's type (``true``, ``[30,
  60]``, ``{"width": 8}``, ``--config.model_kwargs.width=8``), in their
  order (:func:`apply_overrides`).

:func:`override` does all three and validates the result once
(:func:`bort_jax.configs.validate`).

Example:
  >>> config = override(
  ...     load('mnist_mlp'),
  ...     values={'gamma': 0.5},
  ...     overrides=assignments_to_overrides(['epochs=3', 'gamma=0.25']),
  ... )
  >>> config.epochs, config.gamma
  (3, 0.25)
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

from bort_jax.configs import base

# A --config.FIELD override: its field is group 2.
_OVERRIDE = re.compile(r'^--?(no)?config\.([^=.]*)')


def config_source(name_or_path: str) -> Path:
  """The file of a config: a packaged recipe's, or the given file.

  Args:
    name_or_path: a packaged recipe's name, or ``path/to/config.py``
      (optionally ``path/to/config.py:ARG``, passed to its ``get_config``).

  Returns:
    The file to load (with its ``:ARG``, if any).

  Raises:
    ValueError: neither a packaged name nor an existing ``.py`` file.
  """
  # The package imports this module: its names are looked up when called.
  from bort_jax import configs  # pylint: disable=import-outside-toplevel

  if name_or_path in configs.CONFIG_NAMES:
    return configs.config_path(name_or_path)
  path = Path(name_or_path.split(':', 1)[0])
  if path.suffix == '.py':
    if not path.is_file():
      raise ValueError(f'config file {path} not found')
    return Path(name_or_path)
  raise ValueError(
      f'unknown config {name_or_path!r}; valid configs: '
      f'{list(configs.CONFIG_NAMES)} or a path/to/config.py'
  )


def assignments_to_overrides(assignments: Sequence[str]) -> list[str]:
  """``--set FIELD=VALUE`` assignments as ``--config.FIELD=VALUE`` overrides.

  Raises:
    ValueError: an assignment without ``=`` or without a field.
  """
  overrides = []
  for assignment in assignments:
    name, separator, value = assignment.partition('=')
    if not separator or not name.strip():
      raise ValueError(f'--set expects FIELD=VALUE, got {assignment!r}')
    overrides.append(f'--config.{name.strip()}={value.strip()}')
  return overrides


def check_fields(names: Sequence[str]) -> None:
  """Raises for field names no config has (the message lists the valid ones).

  Raises:
    ValueError: an unknown name.
  """
  unknown = sorted(set(names) - set(base.field_names()))
  if unknown:
    raise ValueError(
        f'unknown config field(s) {unknown}; valid fields: '
        f'{", ".join(base.field_names())}'
    )


def check_options(arguments: Sequence[str]) -> None:
  """Raises for an option that is no ``--config.FIELD`` override.

  Raises:
    ValueError: naming the argument.
  """
  for argument in arguments:
    if argument.startswith('-') and not _OVERRIDE.match(argument):
      raise ValueError(f'unrecognized argument {argument!r}')


def check_override_fields(overrides: Sequence[str]) -> None:
  """Raises for an override of an unknown field (listing the valid ones).

  Raises:
    ValueError: naming the fields.
  """
  check_fields(
      [m.group(2) for m in map(_OVERRIDE.match, overrides) if m is not None]
  )


def _define_and_parse(
    source: Path | ml_collections.ConfigDict, overrides: Sequence[str]
) -> ml_collections.ConfigDict:
  """``config_flags`` on a flag set of its own (callable many times)."""
  flag_values = flags.FlagValues()
  inline = isinstance(source, ml_collections.ConfigDict)
  argv = ['config', *([] if inline else [f'--config={source}']), *overrides]
  options = dict(
      flag_values=flag_values,
      sys_argv=argv,
      lock_config=False,
      accept_new_attributes=True,
  )
  try:
    if inline:
      config_flags.DEFINE_config_dict('config', source, **options)
    else:
      config_flags.DEFINE_config_file('config', **options)
    rest = flag_values(argv)
    config = flag_values.config
  except (flags.Error, AttributeError, KeyError, TypeError) as error:
    raise ValueError(f'bad config override: {error}') from None
  except Exception as error:  # noqa: BLE001  # pylint: disable=broad-exception-caught
    # The user's config file: a syntax error, a failed import, a failing
    # get_config().
    raise ValueError(
        f'config file {source} cannot be loaded: '
        f'{type(error).__name__}: {error}'
    ) from None
  if len(rest) > 1:
    raise ValueError(f'unrecognized arguments {rest[1:]}')
  if not isinstance(config, ml_collections.ConfigDict):
    raise ValueError(f'{source}: get_config() must return a ConfigDict')
  return config


def load(name_or_path: str | Path) -> ml_collections.ConfigDict:
  """A config by packaged name or file (:func:`config_source`), not validated.

  Raises:
    ValueError: an unknown name, a missing file, a file that cannot be
      loaded or whose ``get_config()`` returns no ConfigDict.
  """
  return _define_and_parse(config_source(str(name_or_path)), [])


def set_values(
    config: ml_collections.ConfigDict, values: Mapping[str, Any]
) -> ml_collections.ConfigDict:
  """A copy of ``config`` with typed ``values`` set (not validated).

  Raises:
    ValueError: an unknown field, or a value the field's type refuses.
  """
  check_fields(list(values))
  config = copy.deepcopy(config)
  for name, value in values.items():
    try:
      config[name] = value
    except (AttributeError, KeyError, TypeError) as error:
      raise ValueError(f'bad config override: {name}: {error}') from None
  return config


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Sequence[str]
) -> ml_collections.ConfigDict:
  """A copy of ``config`` with ``--config.FIELD=VALUE`` overrides applied.

  Args:
    config: the config to start from (left unchanged).
    overrides: ``--config.FIELD=VALUE`` arguments, later ones winning; each
      value is parsed to its field's type by ``ml_collections.config_flags``.

  Returns:
    The new config (not validated).

  Raises:
    ValueError: an option that is no override, an override of an unknown
      field (the message lists the valid ones), or a value that does not
      parse to its field's type (the message names the override).
  """
  check_options(overrides)
  check_override_fields(overrides)
  if not overrides:
    return copy.deepcopy(config)
  return _define_and_parse(copy.deepcopy(config), overrides)


def override(
    config: ml_collections.ConfigDict,
    *,
    values: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
) -> ml_collections.ConfigDict:
  """A validated copy of ``config``: typed ``values``, then ``overrides``.

  Args:
    config: the config to start from (left unchanged).
    values: typed field values (a program's own flags), set first.
    overrides: ``--config.FIELD=VALUE`` arguments (``--set`` ones through
      :func:`assignments_to_overrides`), applied next, in order.

  Returns:
    The config, validated (:func:`bort_jax.configs.validate`).

  Raises:
    ValueError: an unknown field, a value that does not parse or has the
      wrong type, or a config that does not validate; the message names the
      field.
  """
  config = set_values(config, values or {})
  return base.validate(apply_overrides(config, overrides))
