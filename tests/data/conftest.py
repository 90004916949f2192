"""Fixtures for the data tests: the real MNIST, prepared once per session.

The four IDX files live in ``../shared/data/mnist`` relative to the repository
root (read-only, see that folder's README). ``mnist_data_dir`` builds the tfds
``mnist`` data set from them into a temporary tfds data dir (~10 s), with the
same helper other test packages can use::

  from bort_jax.data.mnist_idx import prepare_mnist
  prepare_mnist(idx_dir, tmp_path_factory.mktemp('tfds'))
"""

import os
from pathlib import Path

import numpy as np
import pytest

from bort_jax.data import mnist_idx, sources

REPO_ROOT = Path(__file__).resolve().parents[2]

MNIST_IDX_DIR = (REPO_ROOT / '..' / 'shared' / 'data' / 'mnist').resolve()


@pytest.fixture(autouse=True)
def _no_tfds_data_dir_env(monkeypatch):
  """No test may depend on (or write to) the user's TFDS_DATA_DIR."""
  monkeypatch.delenv('TFDS_DATA_DIR', raising=False)


@pytest.fixture(scope='session')
def mnist_idx_dir() -> Path:
  """The folder with the four real MNIST IDX .gz files."""
  if not all((MNIST_IDX_DIR / f).is_file() for pair in mnist_idx.IDX_FILES.values() for f in pair):
    pytest.fail(f'real MNIST IDX files not found in {MNIST_IDX_DIR} (see ../shared/data/README.md)')
  return MNIST_IDX_DIR


@pytest.fixture(scope='session')
def mnist_data_dir(mnist_idx_dir, tmp_path_factory) -> str:
  """A tfds data dir holding the real MNIST (array_record), built once."""
  data_dir = tmp_path_factory.mktemp('tfds')
  mnist_idx.prepare_mnist(mnist_idx_dir, data_dir)
  return os.fspath(data_dir)


@pytest.fixture(scope='session')
def mnist_train(mnist_data_dir) -> sources.ArraySource:
  """The MNIST train split, decoded into memory (~3 s)."""
  return sources.open_split('mnist', 'train', data_dir=mnist_data_dir, in_memory=True)


@pytest.fixture(scope='session')
def mnist_test(mnist_data_dir) -> sources.ArraySource:
  """The MNIST test split, decoded into memory."""
  return sources.open_split('mnist', 'eval', data_dir=mnist_data_dir, in_memory=True)


@pytest.fixture(scope='session')
def mnist_test_idx(mnist_idx_dir) -> mnist_idx.MnistArrays:
  """The MNIST test split as decoded from the IDX files."""
  return mnist_idx.load_mnist_split(mnist_idx_dir, 'test')


@pytest.fixture
def rng() -> np.random.Generator:
  return np.random.default_rng(0)
