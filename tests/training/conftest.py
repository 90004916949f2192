"""Fixtures for the training tests: tiny configs (MNIST comes from tests/conftest.py).

Every run here is tiny (an MLP or a 4/8-channel CNN, a few hundred MNIST
examples, a few steps) so the suite stays within minutes on two CPU cores.
Multi-device and multi-process checks run in subprocesses
(``multidevice_check.py``, ``distributed_worker.py``), so this process keeps
its single CPU device.
"""

import pytest

from bort_jax import configs


@pytest.fixture(autouse=True)
def _no_tfds_data_dir_env(monkeypatch):
  """No test may depend on (or write to) the user's TFDS_DATA_DIR."""
  monkeypatch.delenv('TFDS_DATA_DIR', raising=False)


def _tiny_config(name: str = 'mnist_mlp', **changes):
  small = {
      'mnist_mlp': dict(model_kwargs={'hidden_features': [32]}),
      'mnist_cnn': dict(model_kwargs={'channels': [4, 8]}),
  }.get(name, {})
  values = dict(
      epochs=2,
      batch_size=64,
      eval_batch_size=128,
      train_examples=640,
      eval_examples=300,
      **small,
  )
  values.update(changes)
  return configs.replace(configs.get_config(name), **values)


@pytest.fixture(scope='session')
def tiny_config():
  """``tiny_config(name='mnist_mlp', **changes)``: a config shrunk to seconds.

  640 train / 300 eval MNIST examples, batch 64, 2 epochs (20 steps), a
  32-unit MLP or a 4/8-channel CNN.
  """
  return _tiny_config
