"""bort_jax.configs.overrides: a config by name or file, typed values,
``--set`` and ``--config.FIELD=VALUE`` overrides, their order and errors."""

import pytest

from bort_jax import configs
from bort_jax.configs import base, overrides
from bort_jax.training import optimizer_factory


def override(values=None, assignments=(), arguments=()):
  return configs.override(
      configs.get_config('mnist_mlp'),
      values=values,
      overrides=[*configs.assignments_to_overrides(assignments), *arguments],
  )


@pytest.mark.parametrize(
    'values, assignments, arguments, field, expected',
    [
        # A program's typed flag: the value itself, its type kept.
        (dict(gamma=0.5), (), (), 'gamma', 0.5),
        (dict(epochs=4), (), (), 'epochs', 4),
        (dict(optimizer='bort_lion'), (), (), 'optimizer', 'bort_lion'),
        # --config.FIELD=VALUE, parsed to the field's type.
        ({}, (), ['--config.learning_rate=3e-4'], 'learning_rate', 3e-4),
        ({}, (), ['--config.nesterov=true'], 'nesterov', True),
        ({}, (), ['--config.lr_decay_epochs=30'], 'lr_decay_epochs', (30,)),
        # --set FIELD=VALUE, the alias.
        ({}, ['epochs=3'], (), 'epochs', 3),
        ({}, [' gamma = 0.25 '], (), 'gamma', 0.25),
        # Later ones win: typed values, then --set, then --config.
        (dict(epochs=4), ['epochs=5'], (), 'epochs', 5),
        (dict(seed=1), ['seed=2'], ['--config.seed=3'], 'seed', 3),
        ({}, (), ['--config.seed=3', '--config.seed=4'], 'seed', 4),
        (dict(gamma=0.5), (), ['--config.gamma=0.125'], 'gamma', 0.125),
    ],
)
def test_overrides_set_typed_values_later_ones_winning(
    values, assignments, arguments, field, expected
):
  config = override(values, assignments, arguments)
  assert config[field] == expected
  assert type(config[field]) is type(expected)


@pytest.mark.parametrize(
    'values, assignments, arguments, message',
    [
        (dict(epoch=3), (), (), r"unknown config field\(s\) \['epoch'\]"),
        ({}, ['lr=1'], (), r"unknown config field\(s\) \['lr'\]; valid fields"),
        ({}, (), ['--config.lr=1'], r"unknown config field\(s\) \['lr'\]"),
        ({}, (), ['--bogus'], "unrecognized argument '--bogus'"),
        ({}, ['epochs'], (), '--set expects FIELD=VALUE'),
        ({}, ['=3'], (), '--set expects FIELD=VALUE'),
        ({}, (), ['--config.epochs=three'], 'bad config override: .*three'),
        (dict(epochs='three'), (), (), 'bad config override: epochs'),
        (dict(epochs=2.5), (), (), 'bad config override: epochs'),
        # Parsed, then validated once: the message names the field.
        (dict(gamma=-0.1), (), (), 'gamma must be non-negative, got -0.1'),
        ({}, ['schedule=linear'], (), 'schedule must be one of'),
        (dict(optimizer='adam'), (), (), "unknown optimizer 'adam'"),
    ],
)
def test_bad_overrides_name_the_field(values, assignments, arguments, message):
  with pytest.raises(ValueError, match=message):
    override(values, assignments, arguments)


def test_the_config_overridden_is_left_unchanged():
  config = configs.get_config('mnist_mlp')
  before = configs.to_dict(config)
  changed = configs.override(
      config, values=dict(epochs=9), overrides=['--config.seed=5']
  )
  assert (changed.epochs, changed.seed) == (9, 5)
  assert configs.to_dict(config) == before


def test_load_a_packaged_name_or_a_file(tmp_path):
  assert configs.load('mnist_cnn').name == 'mnist_cnn'
  path = tmp_path / 'mine.py'
  path.write_text(
      'from bort_jax.configs import base\n\n'
      'def get_config():\n'
      '  config = base.get_config()\n'
      '  config.name = "mine"\n'
      '  return config\n'
  )
  assert configs.load(str(path)).name == 'mine'
  assert overrides.config_source('mnist_cnn') == configs.config_path(
      'mnist_cnn'
  )


@pytest.mark.parametrize(
    'source, message',
    [
        ('mnist', "unknown config 'mnist'; valid configs"),
        ('missing.py', 'config file missing.py not found'),
        ('broken.py', 'config file .*broken.py cannot be loaded: NameError'),
        ('not_a_dict.py', r'get_config\(\) must return a ConfigDict'),
    ],
)
def test_load_errors(source, message, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / 'broken.py').write_text('def get_config():\n  return nope\n')
  (tmp_path / 'not_a_dict.py').write_text('def get_config():\n  return 3\n')
  with pytest.raises(ValueError, match=message):
    configs.load(source)


def test_validate_owns_the_optimizer_name_check():
  """The config and create_optimizer refuse an unknown name alike."""
  with pytest.raises(ValueError) as from_config:
    configs.replace(base.get_config(), optimizer='bort_adam')
  with pytest.raises(ValueError) as from_factory:
    optimizer_factory.create_optimizer('bort_adam', learning_rate=1e-3)
  assert str(from_config.value) == str(from_factory.value)
  assert configs.OPTIMIZER_NAMES == optimizer_factory.OPTIMIZER_NAMES
