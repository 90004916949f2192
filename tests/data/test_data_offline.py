"""Offline first: a data set that is not prepared fails fast, with directions."""

import logging
import os
import socket
import threading

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


def _closed_port() -> int:
  """A local port that nothing listens on (bound, then released)."""
  with socket.socket() as probe:
    probe.bind(('127.0.0.1', 0))
    return probe.getsockname()[1]


@pytest.fixture
def unreachable_network(monkeypatch):
  """Every http(s) connection goes through a proxy that refuses it."""
  proxy = f'http://127.0.0.1:{_closed_port()}'
  for variable in ('http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY'):
    monkeypatch.setenv(variable, proxy)
  for variable in ('no_proxy', 'NO_PROXY'):
    monkeypatch.delenv(variable, raising=False)


@pytest.mark.parametrize('name', ['mnist', 'cifar10'])
def test_download_without_network_fails_at_once_with_the_offline_route(
    tmp_path, unreachable_network, no_downloads, name
):
  """tfds is never called (``no_downloads``): the unreachable host is found
  by one connection attempt, and nothing is written."""
  data_dir = tmp_path / 'tfds'
  with pytest.raises(data.DatasetDownloadError) as info:
    data.open_split(name, 'train', data_dir=data_dir, download=True)
  message = str(info.value)
  assert (
      f"cannot download '{name}'" in message and 'cannot be reached' in message
  )
  assert HINTS[name][0] in message and '\n' not in message
  if name == 'mnist':
    assert '--mnist-idx-dir' in message
  assert not data_dir.exists()


@pytest.fixture
def dropping_proxy(monkeypatch):
  """A proxy that accepts connections and closes them at once: the host
  looks reachable, and tfds' download then fails (tfds retries disabled)."""
  from tensorflow_datasets.core.download import downloader

  server = socket.create_server(('127.0.0.1', 0))
  stop = threading.Event()

  def serve():
    while not stop.is_set():
      try:
        connection, _ = server.accept()
      except OSError:
        return
      connection.close()

  thread = threading.Thread(target=serve, daemon=True)
  thread.start()
  proxy = f'http://127.0.0.1:{server.getsockname()[1]}'
  for variable in ('http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY'):
    monkeypatch.setenv(variable, proxy)
  for variable in ('no_proxy', 'NO_PROXY'):
    monkeypatch.delenv(variable, raising=False)
  monkeypatch.setattr(downloader, 'MAX_RETRIES', 0)
  yield
  stop.set()
  server.close()
  thread.join(timeout=5)


def test_failed_download_leaves_no_temporary_folders(tmp_path, dropping_proxy):
  data_dir = tmp_path / 'tfds'
  (data_dir / 'downloads').mkdir(parents=True)
  (data_dir / 'downloads' / 'kept').write_text('a file that was there')
  with pytest.raises(data.DatasetDownloadError, match='bort-prepare-mnist'):
    data.open_split('mnist', 'train', data_dir=data_dir, download=True)
  left = sorted(p.relative_to(data_dir).as_posix() for p in data_dir.rglob('*'))
  assert left == ['downloads', 'downloads/kept']


def test_cli_download_without_network_is_one_line(
    tmp_path, unreachable_network, monkeypatch, capsys
):
  from bort_jax.programs import train as train_program

  monkeypatch.delenv('BORT_MNIST_IDX_DIR', raising=False)
  code = train_program.main(
      [
          '--config',
          'mnist_mlp',
          '--workdir',
          str(tmp_path / 'run'),
          '--data-dir',
          str(tmp_path / 'tfds'),
          '--download',
          '--no-progress',
      ]
  )
  errors = [
      line
      for line in capsys.readouterr().err.splitlines()
      if line.startswith('bort-train: error')
  ]
  assert code == 1
  assert len(errors) == 1, errors
  assert '--mnist-idx-dir' in errors[0] and 'bort-prepare-mnist' in errors[0]
  assert not (tmp_path / 'tfds').exists()


def test_a_missing_dataset_logs_no_tfds_warning(tmp_path, caplog, no_downloads):
  """tfds' "Variant folder ... has no dataset_info.json" is the answer to
  the question asked, not a warning: it is not logged."""
  with caplog.at_level(logging.WARNING):
    with pytest.raises(data.DatasetNotFoundError):
      data.open_split('mnist', data_dir=tmp_path / 'empty')
  logged = [r.getMessage() for r in caplog.records]
  assert not [m for m in logged if 'dataset_info' in m], logged
