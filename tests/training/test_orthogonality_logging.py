"""The training loop's orthogonality metrics follow the config's Bort mask."""

import numpy as np

import bort_jax
from bort_jax.models import BORT_INVERTIBLE_CNN_CLASSIFIER_PATTERN
from bort_jax.training import loop


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
  assert tuple(config.bort_exclude) == (BORT_INVERTIBLE_CNN_CLASSIFIER_PATTERN,)
  result = loop.train_and_evaluate(
      config, tmp_path, data_dir=mnist_data_dir, progress=False
  )
  logged = result.metrics[-1]['orthogonality']

  params = result.state.params
  constrained = bort_jax.orthogonality_report(
      params,
      amplitude=config.amplitude,
      mask=bort_jax.kernels_except(*config.bort_exclude),
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
