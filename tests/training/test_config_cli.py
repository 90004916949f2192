"""Configs by name, ``field=value`` overrides and the command line's errors."""

import dataclasses
import importlib.util

import pytest

from bort_jax import models
from bort_jax.training import cli, configs, optimizers
from bort_jax.training.config import TrainConfig, field_names, override


@pytest.mark.parametrize('name', configs.CONFIG_NAMES)
def test_every_config_is_valid(name):
  config = configs.get_config(name)
  assert isinstance(config, TrainConfig) and config.name == name
  assert config.model in models.MODEL_NAMES
  assert config.optimizer in optimizers.OPTIMIZER_NAMES
  assert TrainConfig.from_dict(config.to_dict()) == config
  with pytest.raises(dataclasses.FrozenInstanceError):
    config.epochs = 1


@pytest.mark.parametrize('name', configs.CONFIG_NAMES)
def test_experiments_configs_mirror_the_package(name, repo_root):
  path = repo_root / 'experiments' / 'configs' / f'{name}.py'
  spec = importlib.util.spec_from_file_location(f'experiments_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  assert module.get_config() == configs.get_config(name)


@pytest.mark.parametrize('name, recipe', [
    ('imagenet_resnet50', dict(epochs=90, batch_size=256, peak_learning_rate=0.1,
                               weight_decay=1e-4, gamma=1e-4, amplitude='adaptive')),
    ('imagenet_deit_s', dict(epochs=300, batch_size=1024, peak_learning_rate=1e-3,
                             weight_decay=0.05, warmup_epochs=5, label_smoothing=0.1,
                             gamma=1e-4, amplitude='adaptive', optimizer='bort_adamw')),
    ('imagenet_vgg16', dict(peak_learning_rate=0.01, weight_decay=5e-4, gamma=1e-4)),
    ('mnist_mlp', dict(optimizer='bort_sgd', gamma=0.05)),
    ('cifar10_resnet18', dict(optimizer='bort_sgd', gamma=0.05)),
])
def test_recipes(name, recipe):
  config = configs.get_config(name)
  for key, value in recipe.items():
    assert getattr(config, key) == pytest.approx(value) if isinstance(value, float) else (
        getattr(config, key) == value), key


def test_unknown_config_lists_valid_names():
  with pytest.raises(ValueError, match=r"unknown config 'mnist'.*mnist_mlp.*imagenet_vgg16"):
    configs.get_config('mnist')


@pytest.mark.parametrize('assignment, field, value', [
    ('epochs=7', 'epochs', 7),
    ('epochs=1e2', 'epochs', 100),
    ('learning_rate=3e-4', 'learning_rate', 3e-4),
    ('nesterov=true', 'nesterov', True),
    ('augment=0', 'augment', False),
    ('amplitude=adaptive', 'amplitude', 'adaptive'),
    ('amplitude=2', 'amplitude', 2.0),
    ('lr_decay_epochs=[30, 60]', 'lr_decay_epochs', (30, 60)),
    ('lr_decay_epochs=30', 'lr_decay_epochs', (30,)),
    ('model_kwargs={"width": 8}', 'model_kwargs', {'width': 8}),
    ('optimizer = bort_lion', 'optimizer', 'bort_lion'),
    ('dtype=bfloat16', 'dtype', 'bfloat16'),
])
def test_override_coerces_to_the_field_type(assignment, field, value):
  config = override(TrainConfig(), [assignment])
  assert getattr(config, field) == value
  assert type(getattr(config, field)) is type(value)


@pytest.mark.parametrize('assignment, message', [
    ('epoch=3', r"unknown config field\(s\) \['epoch'\]; valid fields: name, dataset"),
    ('epochs', 'expected field=value'),
    ('=3', 'expected field=value'),
    ('epochs=three', r"cannot set epochs .* 'three'"),
    ('epochs=2.5', 'not an integer'),
    ('nesterov=maybe', 'not a boolean'),
    ('model_kwargs=[1]', 'expected a JSON object'),
    ('schedule=linear', "schedule must be one of"),
    ('amplitude=big', "amplitude must be a positive float or 'adaptive'"),
    ('batch_size=0', 'batch_size must be positive'),
])
def test_override_errors(assignment, message):
  with pytest.raises(ValueError, match=message):
    override(TrainConfig(), [assignment])


def test_later_assignments_win():
  assert override(TrainConfig(), ['epochs=2', 'epochs=5']).epochs == 5


def parse(argv, tmp_path):
  args = cli.build_parser().parse_args(['--workdir', str(tmp_path), *argv])
  return cli.resolve_config(args, tmp_path)


def test_cli_flags_and_set(tmp_path):
  config = parse(['--config', 'mnist_cnn', '--optimizer', 'adamw', '--epochs', '4',
                  '--batch-size', '32', '--learning-rate', '0.01', '--gamma', '0.5',
                  '--seed', '3', '--set', 'weight_decay=0', '--set', 'epochs=6'], tmp_path)
  assert (config.optimizer, config.batch_size, config.learning_rate, config.gamma, config.seed,
          config.weight_decay, config.epochs) == ('adamw', 32, 0.01, 0.5, 3, 0.0, 6)


def test_cli_resume_reads_the_saved_config(tmp_path):
  from bort_jax.training import checkpoint
  checkpoint.save_config(tmp_path, dataclasses.replace(configs.get_config('mnist_mlp'),
                                                       epochs=9))
  assert parse(['--resume'], tmp_path).epochs == 9


@pytest.mark.parametrize('argv, message', [
    (['--config', 'nope'], "unknown config 'nope'; valid configs"),
    ([], '--config is required'),
    (['--config', 'mnist_mlp', '--optimizer', 'adam'], "unknown optimizer 'adam'"),
    (['--config', 'mnist_mlp', '--set', 'lr=1'], 'valid fields: name, dataset'),
    (['--config', 'mnist_mlp', '--compare', 'adamw,sgdd'], "unknown optimizer 'sgdd'"),
])
def test_cli_errors_exit_with_a_message(argv, message, tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(['--workdir', str(tmp_path), *argv])
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err


def test_field_names_are_the_dataclass_fields():
  assert field_names() == tuple(f.name for f in dataclasses.fields(TrainConfig))
  assert 'gamma' in field_names()


def test_format_comparison():
  rows = [cli.comparison_row('adamw', {'eval_accuracy': 0.9876, 'eval_loss': 0.04,
                                       'orthogonality': {'relative_error/mean': 0.5}}, 61.2),
          cli.comparison_row('bort_adamw', {'eval_accuracy': 0.99}, 70.0)]
  lines = cli.format_comparison(rows).splitlines()
  assert lines[0].split()[:3] == ['optimizer', 'test', 'acc']
  assert lines[1].split() == ['adamw', '0.9876', '0.0400', '0.5000', '-', '-', '61']
  assert lines[2].split()[:2] == ['bort_adamw', '0.9900']
