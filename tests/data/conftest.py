"""Fixtures for the data tests: MNIST splits (the data dir comes from
tests/conftest.py)."""

import numpy as np
import pytest

from bort_jax.data import mnist_idx, sources


@pytest.fixture(autouse=True)
def _no_tfds_data_dir_env(monkeypatch):
  """No test may depend on (or write to) the user's TFDS_DATA_DIR."""
  monkeypatch.delenv('TFDS_DATA_DIR', raising=False)


@pytest.fixture(scope='session')
def mnist_train(mnist_data_dir) -> sources.ArraySource:
  """The MNIST train split, decoded into memory (~3 s)."""
  return sources.open_split(
      'mnist', 'train', data_dir=mnist_data_dir, in_memory=True
  )


@pytest.fixture(scope='session')
def mnist_test(mnist_data_dir) -> sources.ArraySource:
  """The MNIST test split, decoded into memory."""
  return sources.open_split(
      'mnist', 'eval', data_dir=mnist_data_dir, in_memory=True
  )


@pytest.fixture(scope='session')
def mnist_test_idx(mnist_idx_dir) -> mnist_idx.MnistArrays:
  """The MNIST test split as decoded from the IDX files."""
  return mnist_idx.load_mnist_split(mnist_idx_dir, 'test')


@pytest.fixture
def rng() -> np.random.Generator:
  return np.random.default_rng(0)
