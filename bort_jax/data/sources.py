"""Random-access sources of examples: tfds ``array_record`` splits, offline first.

A split is opened with :func:`open_split`. Offline (``download=False``, the
default) it must already be prepared in ``data_dir``; otherwise a
:class:`DatasetNotFoundError` is raised at once, naming the data set, the
folder searched and how to provide it: tfds' download (and its retry loop)
is never started. With ``download=True`` the same code first checks within
seconds that the data set's download host can be reached (tfds would retry
for minutes), then calls the tfds builder's
``download_and_prepare(file_format='array_record')``; a download that fails
raises :class:`DatasetDownloadError` and leaves no temporary folder behind.

Reading uses ``tfds`` data sources (no TensorFlow, no ``tf.data``). A whole
batch of records is read with one ``__getitems__`` call on the underlying
``array_record`` reader and only the ``image`` and ``label`` features are
parsed; images are decoded with :func:`bort_jax.data.transforms.decode_image`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import socket
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Union

import numpy as np

from bort_jax._extras import extra_imports
from bort_jax.data import transforms
from bort_jax.data.tfds_warnings import quiet_tfds_warnings
from bort_jax.data.specs import DatasetSpec, dataset_info

if TYPE_CHECKING:
  import tensorflow_datasets as tfds

__all__ = [
    'ArraySource',
    'DatasetDownloadError',
    'DatasetNotFoundError',
    'Examples',
    'Source',
    'TfdsSource',
    'load_into_memory',
    'num_examples',
    'open_split',
    'prepare_builder',
    'resolve_data_dir',
]


@functools.cache
def _record_parser() -> tuple[Any, Any]:
  """``(ArrayRecordDataSource class, tf.Example proto module)``, or Nones.

  The proto is compiled into tfds (no TensorFlow needed); both are imported
  on first read, so importing :mod:`bort_jax.data` does not import tfds.
  """
  try:
    from array_record.python import array_record_data_source  # pylint: disable=import-outside-toplevel
    from tensorflow_datasets.proto import tf_example_pb2  # pylint: disable=import-outside-toplevel
  except ImportError:  # pragma: no cover - fall back to tfds' own decoding.
    return None, None
  return array_record_data_source.ArrayRecordDataSource, tf_example_pb2


class DatasetNotFoundError(FileNotFoundError):
  """The data set is not prepared in ``data_dir`` and ``download`` is False."""


class DatasetDownloadError(DatasetNotFoundError):
  """The data set is not prepared and downloading it failed (e.g. offline)."""


# Seconds to wait for the download host (or proxy) to accept a connection.
_PROBE_TIMEOUT_S = 10.0


class Examples(NamedTuple):
  """Examples read from a source.

  Attributes:
    images: uint8 ``[B, H, W, C]`` for fixed-size data sets, otherwise a list
      of ``B`` encoded images (bytes) or uint8 arrays of varying shape.
    labels: int32 ``[B]``.
  """

  images: Union[np.ndarray, list]
  labels: np.ndarray


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> str:
  """The tfds data dir: ``data_dir``, else ``$TFDS_DATA_DIR``, else tfds' default.

  Read at call time (tfds reads ``TFDS_DATA_DIR`` once, at import).

  Example:
    >>> resolve_data_dir('/data/tfds')
    '/data/tfds'
  """
  if data_dir:
    return os.fspath(Path(data_dir).expanduser())
  env = os.environ.get('TFDS_DATA_DIR')
  if env:
    return os.fspath(Path(env).expanduser())
  return os.fspath(Path('~/tensorflow_datasets').expanduser())


def _builder(spec: DatasetSpec, data_dir: str) -> tfds.core.DatasetBuilder:
  """The tfds builder; MNIST's generates without TensorFlow (same data set)."""
  # tfds is imported here, on first use, so that the package imports without it.
  with extra_imports('bort_jax.data', 'train'):
    if spec.name == 'mnist':
      from bort_jax.data import mnist_idx  # pylint: disable=import-outside-toplevel

      return mnist_idx.MnistFromIdx(data_dir=data_dir)
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  return tfds.builder(spec.name, data_dir=data_dir)


def _not_prepared(
    spec: DatasetSpec, builder: Any, data_dir: str
) -> DatasetNotFoundError:
  version = getattr(builder, 'version', '?')
  return DatasetNotFoundError(
      f'Data set {spec.name!r} (version {version}) is not prepared in the tfds '
      f'data_dir {data_dir!r} (looked for {os.fspath(builder.data_path)}) and '
      f'download=False, so nothing was downloaded. To provide it, '
      f'{spec.how_to_prepare.format(data_dir=data_dir)}'
      f'{"" if spec.download_url is None else ", or pass download=True on a machine with internet"}. '
      f'Then pass data_dir={data_dir!r} (or set TFDS_DATA_DIR).'
  )


def _probe_address(url: str) -> tuple[str, int]:
  """``(host, port)`` a download of ``url`` connects to: its proxy's, if any."""
  parsed = urllib.parse.urlsplit(url)
  proxy = urllib.request.getproxies().get(parsed.scheme)
  if proxy and not urllib.request.proxy_bypass(parsed.hostname or ''):
    parsed = urllib.parse.urlsplit(proxy if '//' in proxy else f'//{proxy}')
  default_port = 443 if parsed.scheme == 'https' else 80
  return parsed.hostname or '', parsed.port or default_port


def _check_reachable(spec: DatasetSpec, data_dir: str) -> None:
  """Raises :class:`DatasetDownloadError` at once if the host is unreachable.

  tfds retries a failed connection about ten times with growing pauses
  (minutes offline); one connection attempt with a timeout says the same in
  seconds.
  """
  if spec.download_url is None:
    return
  host, port = _probe_address(spec.download_url)
  try:
    socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S).close()
  except OSError as error:
    raise _download_failed(
        spec, data_dir, f'{host}:{port} cannot be reached ({error})'
    ) from None


def _download_failed(
    spec: DatasetSpec, data_dir: str, reason: str
) -> DatasetDownloadError:
  return DatasetDownloadError(
      f'cannot download {spec.name!r}: {reason}. Without a network, '
      f'{spec.how_to_prepare.format(data_dir=data_dir)}.'
  )


def _snapshot(root: Path, name: str) -> set[Path]:
  """Every path under ``root/downloads`` and ``root/name``, and the folders."""
  paths = {p for p in (root, root / 'downloads', root / name) if p.exists()}
  for folder in (root / 'downloads', root / name):
    if folder.is_dir():
      paths.update(folder.rglob('*'))
  return paths


def _remove_leftovers(root: Path, name: str, before: set[Path]) -> None:
  """Removes the folders a failed download added under ``root``: tfds'
  ``*.tmp.*`` and ``incomplete.*`` folders and the folders left empty."""
  new = sorted(_snapshot(root, name) - before, key=lambda p: -len(p.parts))
  for path in new:
    if not path.is_dir():
      continue
    if '.tmp.' in path.name or path.name.startswith('incomplete'):
      shutil.rmtree(path, ignore_errors=True)
    elif not any(path.iterdir()):
      path.rmdir()


def _download_and_prepare(
    spec: DatasetSpec, builder: Any, data_dir: str
) -> None:
  """``builder.download_and_prepare``, failing fast and cleanly offline."""
  _check_reachable(spec, data_dir)
  root = Path(data_dir)
  before = _snapshot(root, spec.name)
  try:
    builder.download_and_prepare(file_format='array_record')
  except Exception as error:
    _remove_leftovers(root, spec.name, before)
    # tfds' download errors are requests' and its own DownloadError; any
    # of them leaves the data set missing.
    if type(error).__module__.startswith(('requests', 'urllib3')) or (
        type(error).__name__ == 'DownloadError'
    ):
      raise _download_failed(
          spec, data_dir, f'{type(error).__name__}: {str(error)[:200]}'
      ) from error
    raise


def prepare_builder(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
) -> tfds.core.DatasetBuilder:
  """The tfds builder of a prepared data set, preparing it if allowed.

  Args:
    name: a supported data set (see :data:`bort_jax.data.DATASETS`).
    data_dir: tfds data dir (default: :func:`resolve_data_dir`).
    download: if the data set is not prepared, call
      ``download_and_prepare(file_format='array_record')`` (needs internet);
      if False, raise instead.

  Returns:
    The builder, prepared.

  Raises:
    DatasetNotFoundError: not prepared and ``download`` is False; the message
      names the data set, the folder and how to provide it.
    DatasetDownloadError: not prepared and the download failed (its host
      could not be reached within seconds, or tfds' download failed); the
      message says how to provide the data set without a network.

  Example:
    >>> prepare_builder('mnist', data_dir='/nonexistent')
    Traceback (most recent call last):
    ...
    bort_jax.data.sources.DatasetNotFoundError: Data set 'mnist' ...
  """
  spec = dataset_info(name)
  data_dir = resolve_data_dir(data_dir)
  builder = _builder(spec, data_dir)
  with quiet_tfds_warnings():
    prepared = builder.is_prepared()
  if prepared:
    return builder
  if not download:
    raise _not_prepared(spec, builder, data_dir)
  _download_and_prepare(spec, builder, data_dir)
  return builder


@dataclasses.dataclass(frozen=True, eq=False)
class ArraySource:
  """A split held in memory as arrays (see :func:`load_into_memory`).

  Attributes:
    spec: the data set.
    split: the tfds split name.
    images: uint8 ``[N, H, W, C]``.
    labels: int32 ``[N]``.
  """

  spec: DatasetSpec
  split: str
  images: np.ndarray
  labels: np.ndarray

  def __len__(self) -> int:
    return len(self.labels)

  def read(self, indices: Sequence[int] | np.ndarray) -> Examples:
    """The examples at ``indices``, in that order."""
    indices = np.asarray(indices, np.int64)
    return Examples(self.images[indices], self.labels[indices])


@dataclasses.dataclass(frozen=True, eq=False)
class TfdsSource:
  """A split read on demand from a tfds random-access data source.

  Attributes:
    spec: the data set.
    split: the tfds split name.
    data_source: ``tfds.data_source(...)[split]`` (or
      ``builder.as_data_source(split)``).
  """

  spec: DatasetSpec
  split: str
  data_source: Any

  def __len__(self) -> int:
    return len(self.data_source)

  def _read_raw(self, indices: list[int]) -> tuple[list, list[int]] | None:
    """Images (encoded) and labels parsed straight from the stored records.

    ``None`` if the records are not serialized ``tf.Example``s read by an
    ``array_record`` reader (e.g. under ``tfds.testing.mock_data``).
    """
    reader = getattr(self.data_source, 'data_source', None)
    reader_class, example_proto = _record_parser()
    if reader_class is None or not isinstance(reader, reader_class):
      return None
    images, labels = [], []
    for record in reader.__getitems__(indices):
      feature = example_proto.Example.FromString(record).features.feature
      if 'image' not in feature or 'label' not in feature:
        return None
      images.append(feature['image'].bytes_list.value[0])
      labels.append(feature['label'].int64_list.value[0])
    return images, labels

  def read(self, indices: Sequence[int] | np.ndarray) -> Examples:
    """The examples at ``indices``, in that order.

    Fixed-size images are decoded into one uint8 array; others are returned
    as read (bytes, or arrays when tfds decoded them) for the transforms.
    """
    indices = [int(i) for i in indices]
    channels = self.spec.image_shape[-1]
    raw = self._read_raw(indices) if indices else ([], [])
    if raw is None:
      # One by one: the generic path (only used when the fast one does not
      # apply, e.g. under tfds.testing.mock_data, whose data sources'
      # __getitems__ is broken in tfds 4.9.10 while __getitem__ works).
      examples = [self.data_source[i] for i in indices]
      images = [e['image'] for e in examples]
      labels = [e['label'] for e in examples]
    else:
      images, labels = raw
    labels = np.asarray(labels, np.int32).reshape(len(indices))
    if not self.spec.fixed_size:
      return Examples(list(images), labels)
    if not images:
      return Examples(np.zeros((0, *self.spec.image_shape), np.uint8), labels)
    return Examples(
        np.stack([transforms.decode_image(i, channels) for i in images]), labels
    )


Source = Union[ArraySource, TfdsSource]


def load_into_memory(source: Source, chunk_size: int = 4096) -> ArraySource:
  """Decodes a whole fixed-size split into memory (MNIST: ~3 s, 47 MB).

  Worth it when a split is iterated over several epochs.

  Args:
    source: a source of a fixed-size data set (not ImageNet).
    chunk_size: examples read per call.

  Returns:
    The same examples as an :class:`ArraySource`.

  Example:
    >>> src = load_into_memory(open_split('mnist', 'test'))  # doctest: +SKIP
    >>> src.images.shape  # doctest: +SKIP
    (10000, 28, 28, 1)
  """
  if isinstance(source, ArraySource):
    return source
  if not source.spec.fixed_size:
    raise ValueError(f'{source.spec.name} images vary in size; keep it on disk')
  n = len(source)
  images = np.empty((n, *source.spec.image_shape), np.uint8)
  labels = np.empty((n,), np.int32)
  for start in range(0, n, chunk_size):
    stop = min(start + chunk_size, n)
    images[start:stop], labels[start:stop] = source.read(np.arange(start, stop))
  return ArraySource(source.spec, source.split, images, labels)


def open_split(
    name: str,
    split: str = 'train',
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    in_memory: bool = False,
) -> Source:
  """Opens one split of a supported data set for random access.

  Args:
    name: ``'mnist'``, ``'cifar10'`` or ``'imagenet2012'``.
    split: ``'train'``, ``'eval'`` (the data set's test/validation split) or
      any tfds split name or slice (``'test'``, ``'train[:1000]'``...).
    data_dir: tfds data dir (default: ``$TFDS_DATA_DIR``, else tfds'
      default ``~/tensorflow_datasets``).
    download: download and prepare it if it is not prepared (needs
      internet); by default raise :class:`DatasetNotFoundError` instead.
    in_memory: decode the whole split into memory now
      (:func:`load_into_memory`); only for fixed-size data sets.

  Returns:
    A :class:`TfdsSource`, or an :class:`ArraySource` if ``in_memory``.

  Raises:
    DatasetNotFoundError: not prepared and ``download`` is False.

  Example:
    >>> test = open_split('mnist', 'eval', data_dir='/tmp/tfds')  # doctest: +SKIP
    >>> len(test), test.read([0, 1]).images.shape  # doctest: +SKIP
    (10000, (2, 28, 28, 1))
  """
  spec = dataset_info(name)
  builder = prepare_builder(name, data_dir=data_dir, download=download)
  tfds_split = spec.tfds_split(split)
  try:
    data_source = builder.as_data_source(split=tfds_split)
  except (ValueError, NotImplementedError) as e:  # Tfrecord only, bad split....
    raise ValueError(
        f'cannot open split {tfds_split!r} of {name!r} in '
        f'{os.fspath(builder.data_dir)} for random access: {e}'
    ) from e
  source = TfdsSource(spec, tfds_split, data_source)
  return load_into_memory(source) if in_memory else source


def num_examples(
    name: str,
    split: str = 'train',
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
) -> int:
  """Number of examples of a prepared split (read from its metadata).

  Args:
    name: a supported data set.
    split: ``'train'``, ``'eval'`` or a tfds split name or slice.
    data_dir: tfds data dir (see :func:`open_split`).
    download: prepare it first if needed.

  Returns:
    The count.

  Example:
    >>> num_examples('mnist', 'eval', data_dir='/tmp/tfds')  # doctest: +SKIP
    10000
  """
  spec = dataset_info(name)
  builder = prepare_builder(name, data_dir=data_dir, download=download)
  return int(builder.info.splits[spec.tfds_split(split)].num_examples)
