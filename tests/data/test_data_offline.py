"""Offline first: a data set that is not prepared fails fast, with directions."""

import os

import pytest
import tensorflow_datasets as tfds

from bort_jax import data

# What the error must tell, per data set.
HINTS = {
    'mnist': ('bort-prepare-mnist --idx-dir', 'download=True'),
    'cifar10': ('tfds build cifar10', 'download=True'),
    'imagenet2012': ('tfds build imagenet2012', 'downloads/manual'),
}

ENTRY_POINTS = {
    'open_split': lambda name, **kw: data.open_split(name, 'train', **kw),
    'num_examples': lambda name, **kw: data.num_examples(name, 'eval', **kw),
    'train_iterator': lambda name, **kw: data.make_train_iterator(
        name, batch_size=8, seed=0, process_index=0, process_count=1, **kw
    ),
    'eval_iterator': lambda name, **kw: data.make_eval_iterator(
        name, batch_size=8, process_index=0, process_count=1, **kw
    ),
}


@pytest.fixture
def no_downloads(monkeypatch):
  """Any attempt to download or prepare fails the test loudly."""

  def forbidden(*args, **kwargs):
    raise AssertionError('a download was attempted')

  monkeypatch.setattr(
      tfds.core.DatasetBuilder, 'download_and_prepare', forbidden
  )
  monkeypatch.setattr(tfds.download.DownloadManager, 'download', forbidden)


@pytest.mark.parametrize('entry', sorted(ENTRY_POINTS))
@pytest.mark.parametrize('name', sorted(HINTS))
def test_missing_dataset_fails_with_directions_and_no_download(
    tmp_path, no_downloads, name, entry
):
  """No download or preparation is attempted (``no_downloads`` fails the test
  on any), nothing is created, and the error says how to provide the data."""
  data_dir = tmp_path / 'empty_tfds'
  with pytest.raises(data.DatasetNotFoundError) as info:
    ENTRY_POINTS[entry](name, data_dir=data_dir)
  message = str(info.value)
  assert f"'{name}'" in message
  assert os.fspath(data_dir) in message
  assert all(hint in message for hint in HINTS[name])
  assert 'download=False' in message
  assert isinstance(info.value, FileNotFoundError)
  assert not data_dir.exists()  # Nothing was created.


def test_missing_dataset_names_tfds_data_dir_env(
    tmp_path, monkeypatch, no_downloads
):
  monkeypatch.setenv('TFDS_DATA_DIR', os.fspath(tmp_path / 'from_env'))
  with pytest.raises(data.DatasetNotFoundError, match='from_env'):
    data.open_split('mnist')


def test_resolve_data_dir_precedence(tmp_path, monkeypatch):
  assert data.resolve_data_dir(tmp_path / 'arg') == os.fspath(tmp_path / 'arg')
  assert data.resolve_data_dir() == os.path.expanduser('~/tensorflow_datasets')
  monkeypatch.setenv('TFDS_DATA_DIR', os.fspath(tmp_path / 'env'))
  assert data.resolve_data_dir() == os.fspath(tmp_path / 'env')
  assert data.resolve_data_dir(tmp_path / 'arg') == os.fspath(tmp_path / 'arg')


def test_prepared_dataset_is_found_through_env(
    mnist_data_dir, monkeypatch, no_downloads
):
  monkeypatch.setenv('TFDS_DATA_DIR', mnist_data_dir)
  assert data.num_examples('mnist', 'train') == 60000
