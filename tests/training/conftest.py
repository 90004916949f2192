"""Fixtures for the training tests: MNIST prepared once per session, tiny configs.

Every run here is tiny (an MLP or a 4/8-channel CNN, a few hundred MNIST
examples, a few steps) so the suite stays within minutes on two CPU cores.
Multi-device and multi-process checks run in subprocesses
(``multidevice_check.py``, ``distributed_worker.py``), so this process keeps
its single CPU device.
"""

import dataclasses
import fcntl
import os
from pathlib import Path

# Import the working tree's package even if the installed one is stale.
REPO_ROOT = Path(__file__).resolve().parents[2]

import pytest

from bort_jax.data import mnist_idx
from bort_jax.training import configs, input_pipeline

MNIST_IDX_DIR = (REPO_ROOT / '..' / 'shared' / 'data' / 'mnist').resolve()


@pytest.fixture(autouse=True)
def _no_tfds_data_dir_env(monkeypatch):
  """No test may depend on (or write to) the user's TFDS_DATA_DIR."""
  monkeypatch.delenv('TFDS_DATA_DIR', raising=False)


@pytest.fixture(scope='session')
def mnist_data_dir(tmp_path_factory) -> str:
  """A tfds data dir holding the real MNIST, built from the IDX files once.

  Shared by the pytest-xdist workers of a run (built under a lock by the
  first one, ~10 s) through ``input_pipeline.ensure_mnist``, the function
  ``bort-train`` prepares MNIST with.
  """
  if not all((MNIST_IDX_DIR / f).is_file() for pair in mnist_idx.IDX_FILES.values() for f in pair):
    pytest.fail(f'MNIST IDX files not found in {MNIST_IDX_DIR} (see ../shared/data/README.md)')
  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    root = root.parent  # the run's folder, shared by its workers
  data_dir = root / 'training_tfds'
  with open(root / 'training_tfds.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    assert input_pipeline.ensure_mnist(os.fspath(data_dir), MNIST_IDX_DIR)
  return os.fspath(data_dir)


def _tiny_config(name: str = 'mnist_mlp', **changes):
  base = configs.get_config(name)
  small = {
      'mnist_mlp': dict(model_kwargs={'hidden_features': [32]}),
      'mnist_cnn': dict(model_kwargs={'channels': [4, 8]}),
  }.get(name, {})
  values = dict(epochs=2, batch_size=64, eval_batch_size=128, train_examples=640,
                eval_examples=300, **small)
  values.update(changes)
  return dataclasses.replace(base, **values)


@pytest.fixture(scope='session')
def tiny_config():
  """``tiny_config(name='mnist_mlp', **changes)``: a config shrunk to seconds.

  640 train / 300 eval MNIST examples, batch 64, 2 epochs (20 steps), a
  32-unit MLP or a 4/8-channel CNN.
  """
  return _tiny_config


@pytest.fixture(scope='session')
def repo_root() -> Path:
  return REPO_ROOT


@pytest.fixture
def subprocess_env():
  """Environment for subprocesses: the working tree first on the path, one thread pool."""
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join([str(REPO_ROOT), env.get('PYTHONPATH', '')])
  env.pop('TFDS_DATA_DIR', None)
  env.pop('XLA_FLAGS', None)
  return env
