"""The training loop's orthogonality metrics follow the config's Bort mask,
and a config's ``bort_exclude`` names layers of its model."""

import numpy as np
import pytest

import bort_jax
from bort_jax import configs
from bort_jax.training import loop, modeling, optimizer_factory
from bort_jax.training.errors import ConfigError


def test_mnist_invertible_cnn_logs_the_constrained_kernels_only(
    tmp_path, mnist_data_dir, tiny_config
):
  config = tiny_config(
      'mnist_invertible_cnn',
      epochs=1,
      train_examples=256,
      eval_examples=128,
      model_kwargs={'stem_channels': 9},
  )
  assert tuple(config.bort_exclude) == ('classifier',)
  result = loop.train_and_evaluate(
      config, tmp_path, data_dir=mnist_data_dir, progress=False
  )
  logged = result.metrics[-1]['orthogonality']

  params = result.state.params
  constrained = bort_jax.orthogonality_report(
      params,
      amplitude=config.amplitude,
      mask=bort_jax.kernels_except(*modeling.bort_exclude_patterns(config)),
  )
  every_kernel = bort_jax.orthogonality_report(
      params, amplitude=config.amplitude
  )
  assert set(every_kernel) - set(constrained) == {'layers/9/kernel'}
  for figure, value in bort_jax.summarize_report(constrained).items():
    np.testing.assert_allclose(logged[figure], float(value), rtol=1e-5)
  # With the free classifier (7056 -> 10 with 9 stem channels) the figures
  # would differ.
  with_classifier = bort_jax.summarize_report(every_kernel)
  assert not np.allclose(
      [float(with_classifier[f]) for f in sorted(logged)],
      [logged[f] for f in sorted(logged)],
      rtol=1e-3,
  )


def test_layer_names_resolve_to_kernel_patterns():
  config = configs.get_config('mnist_invertible_cnn')
  assert modeling.bort_exclude_patterns(config) == ('^layers/9/',)
  config = configs.replace(config, bort_exclude=('down1', '^layers/9/kernel$'))
  assert modeling.bort_exclude_patterns(config) == (
      '^layers/2/',
      '^layers/9/kernel$',
  )


def test_regular_expressions_pass_through_unchanged():
  config = configs.replace(
      configs.get_config('mnist_mlp'), bort_exclude=('^layers/3/kernel$',)
  )
  assert modeling.bort_exclude_patterns(config) == ('^layers/3/kernel$',)
  assert modeling.bort_exclude_patterns(configs.get_config('mnist_cnn')) == ()


def test_an_unknown_layer_name_fails_when_the_optimizer_is_built():
  config = configs.replace(
      configs.get_config('mnist_mlp'), bort_exclude=('clasifier',)
  )
  configs.validate(config)  # a name is a valid entry on its own
  with pytest.raises(
      ConfigError, match="bort_exclude: MLP has no layer 'clasifier'"
  ):
    optimizer_factory.optimizer_from_config(config, steps_per_epoch=10)
