"""Configs (bort_jax.configs) and bort-train's command line: recipes, overrides
with ``--config.FIELD=VALUE`` and ``--set``, and the errors."""

import json

import ml_collections
import pytest

from bort_jax import configs, models
from bort_jax.configs import base
from bort_jax.programs import train_runs
from bort_jax.programs import train as train_program
from bort_jax.training import checkpoint, optimizer_factory


@pytest.mark.parametrize('name', configs.CONFIG_NAMES)
def test_every_config_is_valid_and_round_trips(name):
  config = configs.get_config(name)
  assert isinstance(config, ml_collections.ConfigDict) and config.name == name
  assert config.model in models.MODEL_NAMES
  assert config.optimizer in optimizer_factory.OPTIMIZER_NAMES
  assert configs.to_dict(
      configs.from_dict(configs.to_dict(config))
  ) == configs.to_dict(config)
  assert set(config.keys()) == set(configs.field_names())
  with pytest.raises(AttributeError, match='epoch'):
    config.epoch = 1  # locked: a typo does not add a field


@pytest.mark.parametrize('name', configs.CONFIG_NAMES)
def test_recipes_change_only_what_differs_from_the_base(name):
  """Each recipe file sets a handful of fields; the base holds the rest."""
  source = configs.config_path(name).read_text()
  assignments = [
      line for line in source.splitlines() if line.startswith('  config.')
  ]
  assert 5 <= len(assignments) <= 12, assignments


@pytest.mark.parametrize(
    'name, recipe',
    [
        (
            'imagenet_resnet50',
            dict(
                epochs=90,
                batch_size=256,
                peak=0.1,
                weight_decay=1e-4,
                gamma=1e-4,
                amplitude='adaptive',
            ),
        ),
        (
            'imagenet_deit_s',
            dict(
                epochs=300,
                batch_size=1024,
                peak=1e-3,
                weight_decay=0.05,
                warmup_epochs=5,
                label_smoothing=0.1,
                gamma=1e-4,
                amplitude='adaptive',
                optimizer='bort_adamw',
            ),
        ),
        ('imagenet_vgg16', dict(peak=0.01, weight_decay=5e-4, gamma=1e-4)),
        ('mnist_mlp', dict(optimizer='bort_sgd', gamma=0.05)),
        ('cifar10_resnet18', dict(optimizer='bort_sgd', gamma=0.05)),
    ],
)
def test_recipes_set_their_fields_and_peak_learning_rate(name, recipe):
  config = configs.get_config(name)
  for key, value in recipe.items():
    actual = (
        optimizer_factory.peak_learning_rate(config)
        if key == 'peak'
        else config[key]
    )
    assert actual == (
        pytest.approx(value) if isinstance(value, float) else value
    ), key


def test_unknown_config_lists_valid_names():
  with pytest.raises(
      ValueError, match=r"unknown config 'mnist'.*mnist_mlp.*imagenet_vgg16"
  ):
    configs.get_config('mnist')


@pytest.mark.parametrize(
    'changes, message',
    [
        (dict(schedule='linear'), 'schedule must be one of'),
        (
            dict(amplitude='big'),
            "amplitude must be a positive number or 'adaptive'",
        ),
        (
            dict(amplitude=-1.0),
            "amplitude must be a positive number or 'adaptive'",
        ),
        (dict(batch_size=0), 'batch_size must be positive'),
        (dict(gamma=-0.1), 'gamma must be non-negative'),
        (dict(epochs=2.5), 'epochs must be an integer'),
        (
            dict(bort_exclude=('[',)),
            "bort_exclude: '\\[' is not a regular expression",
        ),
        (
            dict(parallel='pmap', param_sharding='fsdp'),
            'param_sharding=fsdp needs parallel=jit',
        ),
        (
            dict(epoch=3),
            r"unknown config field\(s\) \['epoch'\]; valid fields: amplitude",
        ),
    ],
)
def test_validation_names_the_field(changes, message):
  with pytest.raises(ValueError, match=message):
    configs.replace(base.get_config(), **changes)


def test_validate_catches_a_value_set_on_the_dict():
  config = base.get_config()
  config.schedule = 'linear'
  with pytest.raises(ValueError, match='schedule must be one of'):
    configs.validate(config)


def parse(argv, workdir):
  args, extra = train_program.build_parser().parse_known_args(
      ['--workdir', str(workdir), *argv]
  )
  return train_program.resolve_config(args, workdir, extra)


@pytest.mark.parametrize(
    'override, field, value',
    [
        ('--config.epochs=7', 'epochs', 7),
        ('--config.learning_rate=3e-4', 'learning_rate', 3e-4),
        ('--config.nesterov=true', 'nesterov', True),
        ('--config.augment=false', 'augment', False),
        ('--config.amplitude=adaptive', 'amplitude', 'adaptive'),
        ('--config.amplitude=2.0', 'amplitude', 2.0),
        ('--config.lr_decay_epochs=[30, 60]', 'lr_decay_epochs', (30, 60)),
        ('--config.lr_decay_epochs=30', 'lr_decay_epochs', (30,)),
        (
            '--config.bort_exclude=["^layers/3/"]',
            'bort_exclude',
            ('^layers/3/',),
        ),
        ('--config.model_kwargs={"width": 8}', 'model_kwargs', {'width': 8}),
        ('--config.model_kwargs.width=8', 'model_kwargs', {'width': 8}),
        ('--set=optimizer=bort_lion', 'optimizer', 'bort_lion'),
        ('--set=dtype=bfloat16', 'dtype', 'bfloat16'),
    ],
)
def test_overrides_take_the_field_type(override, field, value, tmp_path):
  config = parse(['--config', 'mnist_mlp', override], tmp_path)
  actual = config[field].to_dict() if field == 'model_kwargs' else config[field]
  assert actual == value
  assert type(actual) is type(value)


def test_flags_set_and_config_overrides_later_ones_win(tmp_path):
  config = parse(
      [
          '--config',
          'mnist_cnn',
          '--optimizer',
          'adamw',
          '--epochs',
          '4',
          '--batch-size',
          '32',
          '--learning-rate',
          '0.01',
          '--gamma',
          '0.5',
          '--seed',
          '3',
          '--set',
          'weight_decay=0',
          '--set',
          'epochs=6',
          '--config.seed=4',
      ],
      tmp_path,
  )
  assert (
      config.optimizer,
      config.batch_size,
      config.learning_rate,
      config.gamma,
      config.weight_decay,
      config.epochs,
      config.seed,
  ) == ('adamw', 32, 0.01, 0.5, 0.0, 6, 4)


def test_config_from_a_file(tmp_path):
  path = tmp_path / 'my_config.py'
  path.write_text(
      'from bort_jax.configs import base\n\n'
      'def get_config():\n'
      '  config = base.get_config()\n'
      '  config.name = "mine"\n'
      '  config.epochs = 3\n'
      '  return config\n'
  )
  config = parse(['--config', str(path), '--config.seed=2'], tmp_path)
  assert (config.name, config.epochs, config.seed) == ('mine', 3, 2)


def test_resume_reads_the_saved_config(tmp_path):
  checkpoint.save_config(
      tmp_path, configs.replace(configs.get_config('mnist_mlp'), epochs=9)
  )
  assert parse(['--resume'], tmp_path).epochs == 9
  assert parse(['--resume', '--config.epochs=11'], tmp_path).epochs == 11
  saved = json.loads((tmp_path / 'config.json').read_text())
  assert configs.to_dict(checkpoint.load_config(tmp_path)) == saved


@pytest.mark.parametrize(
    'argv, message',
    [
        (['--config', 'nope'], "unknown config 'nope'; valid configs"),
        ([], '--config is required'),
        (
            ['--config', 'mnist_mlp', '--optimizer', 'adam'],
            "unknown optimizer 'adam'",
        ),
        (
            ['--config', 'mnist_mlp', '--set', 'lr=1'],
            "unknown config field(s) ['lr']",
        ),
        (
            ['--config', 'mnist_mlp', '--config.lr=1'],
            "unknown config field(s) ['lr']",
        ),
        (
            ['--config', 'mnist_mlp', '--set', 'epochs'],
            '--set expects FIELD=VALUE',
        ),
        (
            ['--config', 'mnist_mlp', '--config.epochs=three'],
            '--config.epochs=three',
        ),
        (
            ['--config', 'mnist_mlp', '--config.schedule=linear'],
            'schedule must be one of',
        ),
        (
            ['--config', 'mnist_mlp', '--bogus'],
            "unrecognized argument '--bogus'",
        ),
        (
            ['--config', 'mnist_mlp', '--compare', 'adamw,sgdd'],
            "unknown optimizer 'sgdd'",
        ),
    ],
)
def test_cli_errors_exit_with_a_message(argv, message, tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    train_program.main(['--workdir', str(tmp_path), *argv])
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err


def test_format_comparison_table():
  rows = [
      train_runs.comparison_row(
          'adamw',
          {
              'eval_accuracy': 0.9876,
              'eval_loss': 0.04,
              'orthogonality': {'relative_error/mean': 0.5},
          },
          61.2,
      ),
      train_runs.comparison_row('bort_adamw', {'eval_accuracy': 0.99}, 70.0),
  ]
  lines = train_runs.format_comparison(rows).splitlines()
  assert lines[0].split()[:3] == ['optimizer', 'test', 'acc']
  assert lines[1].split() == [
      'adamw',
      '0.9876',
      '0.0400',
      '0.5000',
      '-',
      '-',
      '61',
  ]
  assert lines[2].split()[:2] == ['bort_adamw', '0.9900']
