"""Fixtures every test package can use: the real MNIST, the repository, tiny
training configs, and no user TFDS_DATA_DIR.

Plain helper functions are in ``testing.py`` beside this file.

The four MNIST IDX ``.gz`` files are found through ``$BORT_MNIST_IDX_DIR``,
else in ``../shared/data/mnist`` next to the repository (the layout of this
project's development machines; the package itself knows no such path).
``mnist_data_dir`` builds the tfds ``mnist`` data set from them once per
test run (~10 s), shared by the pytest-xdist workers.
"""

import fcntl
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items):
  """Modules marked ``expensive`` run first (a stable sort keeps the rest).

  With ``-n 2 --dist loadfile`` a module runs whole on one worker, in
  collection order; a minutes-long module collected last would leave the
  other worker idle at the end.
  """
  items.sort(key=lambda item: item.get_closest_marker('expensive') is None)


MNIST_IDX_DIR_ENV = 'BORT_MNIST_IDX_DIR'
DEFAULT_MNIST_IDX_DIR = REPO_ROOT / '..' / 'shared' / 'data' / 'mnist'


@pytest.fixture(scope='session')
def repo_root() -> Path:
  """The repository's root folder."""
  return REPO_ROOT


@pytest.fixture(scope='session')
def mnist_idx_dir() -> Path:
  """The folder with the four real MNIST IDX .gz files."""
  from bort_jax.data import mnist_idx  # pylint: disable=import-outside-toplevel

  folder = Path(os.environ.get(MNIST_IDX_DIR_ENV) or DEFAULT_MNIST_IDX_DIR)
  try:
    return mnist_idx.find_idx_files(folder)
  except FileNotFoundError as error:
    pytest.fail(f'{error}; set {MNIST_IDX_DIR_ENV} to the folder holding them')


@pytest.fixture(scope='session')
def mnist_data_dir(mnist_idx_dir, tmp_path_factory) -> str:
  """A tfds data dir holding the real MNIST (array_record), built once.

  Built under a lock by the first pytest-xdist worker that needs it, in the
  run's temporary folder, which all workers share.
  """
  from bort_jax.data import mnist_idx  # pylint: disable=import-outside-toplevel

  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    root = root.parent  # the run's folder, shared by its workers
  data_dir = root / 'mnist_tfds'
  with open(root / 'mnist_tfds.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    mnist_idx.prepare_mnist(mnist_idx_dir, data_dir)
  return os.fspath(data_dir)


@pytest.fixture(scope='session')
def subprocess_env():
  """Environment for subprocesses: the working tree first on the path, the
  user's tfds and XLA settings removed."""
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(
      [str(REPO_ROOT), env.get('PYTHONPATH', '')]
  )
  env.pop('TFDS_DATA_DIR', None)
  env.pop('XLA_FLAGS', None)
  return env


@pytest.fixture(autouse=True)
def _no_tfds_data_dir_env(monkeypatch):
  """No test may depend on (or write to) the user's TFDS_DATA_DIR."""
  monkeypatch.delenv('TFDS_DATA_DIR', raising=False)


def _tiny_config(name: str = 'mnist_mlp', **changes):
  from bort_jax import configs  # pylint: disable=import-outside-toplevel

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
  32-unit MLP or a 4/8-channel CNN. Every training run in the tests is this
  tiny, so the suite stays within minutes on two CPU cores; multi-device and
  multi-process checks run in subprocesses, so the test process keeps its
  single CPU device.
  """
  return _tiny_config
