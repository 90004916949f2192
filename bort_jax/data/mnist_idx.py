"""Prepares the tfds ``mnist`` data set from the four IDX ``.gz`` files.

tfds' stock ``mnist`` builder downloads the IDX files, checks their checksums
and encodes the images with TensorFlow. This module builds the same data set
(name ``mnist``, version 3.0.1, features ``image`` uint8 28x28x1 and ``label``
``ClassLabel(num_classes=10)``, splits ``train``/``test``) from local IDX
files, without TensorFlow: the files are decoded with numpy, the images are
PNG-encoded (a small numpy + zlib encoder) and tfds writes them in the
``array_record`` format. Afterwards the directory reads like any prepared tfds
data set::

  tfds.data_source('mnist', data_dir=data_dir, download=False)

The command line ``bort-prepare-mnist`` (:mod:`bort_jax.programs.prepare_mnist`)
calls :func:`prepare_mnist`; ``bort-train`` calls :func:`ensure_mnist`.

Example:
  >>> prepare_mnist('path/to/mnist_idx', '/tmp/tfds')  # doctest: +SKIP
  PosixPath('/tmp/tfds/mnist/3.0.1')
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
import tempfile
import urllib.parse
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification import mnist as tfds_mnist

from bort_jax.data.tfds_warnings import quiet_tfds_warnings

__all__ = [
    'IDX_FILES',
    'IdxFormatError',
    'MnistArrays',
    'MnistFromIdx',
    'encode_png_gray',
    'ensure_mnist',
    'find_idx_files',
    'load_mnist_split',
    'prepare_mnist',
    'read_idx',
    'verify_prepared',
]

# split -> (images file, labels file), the standard names of LeCun's files.
IDX_FILES = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}
_NUM_EXAMPLES = {'train': 60000, 'test': 10000}
_IMAGE_SIZE = 28
_NUM_CLASSES = 10

# IDX type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/).
_IDX_DTYPES = {
    0x08: np.dtype('>u1'),
    0x09: np.dtype('>i1'),
    0x0B: np.dtype('>i2'),
    0x0C: np.dtype('>i4'),
    0x0D: np.dtype('>f4'),
    0x0E: np.dtype('>f8'),
}


class IdxFormatError(ValueError):
  """An IDX file is malformed or does not hold what MNIST needs."""


class MnistArrays(NamedTuple):
  """One decoded MNIST split.

  Attributes:
    images: uint8 ``[N, 28, 28]``.
    labels: int64 ``[N]`` in ``0..9``.
  """

  images: np.ndarray
  labels: np.ndarray


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
  """Decodes one IDX file, gzip-compressed or not.

  The header is two zero bytes, a type byte, the number of dimensions and one
  big-endian uint32 per dimension; the payload follows, big-endian.

  Args:
    path: the IDX file.

  Returns:
    The array, in native byte order, shaped as the header says.

  Raises:
    FileNotFoundError: if ``path`` does not exist.
    IdxFormatError: on a gzip file that does not decompress (zlib or gzip
      error), a bad magic number, an unknown type byte or a payload whose
      size does not match the header; the message names the file.

  Example:
    >>> labels = read_idx('mnist_idx/t10k-labels-idx1-ubyte.gz')  # doctest: +SKIP
    >>> labels.shape, labels.dtype  # doctest: +SKIP
    ((10000,), dtype('uint8'))
  """
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'IDX file not found: {path}')
  data = path.read_bytes()
  if data[:2] == b'\x1f\x8b':  # gzip magic; IDX files start with 0x0000.
    try:
      data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile: an OSError.
      raise IdxFormatError(
          f'{path}: cannot decompress (corrupt or truncated gzip file): {e}'
      ) from e
  if len(data) < 4:
    raise IdxFormatError(
        f'{path}: {len(data)} bytes, too short for an IDX header'
    )
  if data[0] != 0 or data[1] != 0:
    raise IdxFormatError(
        f'{path}: bad magic number 0x{data[:4].hex()} (must start with 0x0000)'
    )
  type_code, ndim = data[2], data[3]
  if type_code not in _IDX_DTYPES:
    raise IdxFormatError(f'{path}: unknown IDX type byte 0x{type_code:02x}')
  header_size = 4 + 4 * ndim
  if len(data) < header_size:
    raise IdxFormatError(f'{path}: truncated header ({ndim} dimensions)')
  shape = tuple(int(d) for d in np.frombuffer(data, '>u4', ndim, offset=4))
  dtype = _IDX_DTYPES[type_code]
  expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  actual = len(data) - header_size
  if actual != expected:
    raise IdxFormatError(
        f'{path}: payload has {actual} bytes, header {shape} of {dtype.name} '
        f'needs {expected}'
    )
  array = np.frombuffer(data, dtype, offset=header_size).reshape(shape)
  return array.astype(dtype.newbyteorder('='))


def _check_magic(path: Path, expected_ndim: int, array: np.ndarray) -> None:
  """Checks for the MNIST magic numbers 0x00000801 / 0x00000803 (uint8)."""
  if array.dtype != np.uint8 or array.ndim != expected_ndim:
    raise IdxFormatError(
        f'{path}: expected magic number 0x0000080{expected_ndim} (uint8, '
        f'{expected_ndim} dimensions), got {array.dtype.name} with shape '
        f'{array.shape}'
    )


def _load_pair(images_path: Path, labels_path: Path, split: str) -> MnistArrays:
  """Reads and validates one split's image and label IDX files."""
  images, labels = read_idx(images_path), read_idx(labels_path)
  _check_magic(images_path, 3, images)
  _check_magic(labels_path, 1, labels)
  n = _NUM_EXAMPLES[split]
  if images.shape != (n, _IMAGE_SIZE, _IMAGE_SIZE):
    raise IdxFormatError(
        f'{images_path}: expected {n} images of {_IMAGE_SIZE}x{_IMAGE_SIZE}, '
        f'got shape {images.shape}'
    )
  if labels.shape != (n,):
    raise IdxFormatError(
        f'{labels_path}: expected {n} labels, got {labels.shape}'
    )
  if labels.max() >= _NUM_CLASSES:
    raise IdxFormatError(f'{labels_path}: label {labels.max()} is not in 0..9')
  return MnistArrays(images, labels.astype(np.int64))


def load_mnist_split(
    idx_dir: str | os.PathLike[str], split: str
) -> MnistArrays:
  """Reads and validates one MNIST split from the IDX files in ``idx_dir``.

  Args:
    idx_dir: folder holding the four standard ``*-idx?-ubyte.gz`` files.
    split: ``'train'`` (60000 examples) or ``'test'`` (10000).

  Returns:
    The split's images and labels.

  Raises:
    ValueError: for an unknown split.
    FileNotFoundError: if a file is missing.
    IdxFormatError: if a file is malformed or has the wrong size.

  Example:
    >>> test = load_mnist_split('mnist_idx', 'test')  # doctest: +SKIP
    >>> test.images.shape, test.labels.shape  # doctest: +SKIP
    ((10000, 28, 28), (10000,))
  """
  if split not in IDX_FILES:
    raise ValueError(
        f'unknown MNIST split {split!r}; valid: {sorted(IDX_FILES)}'
    )
  images_name, labels_name = IDX_FILES[split]
  return _load_pair(
      Path(idx_dir) / images_name, Path(idx_dir) / labels_name, split
  )


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
  """One PNG chunk: length, type, payload, CRC-32 of type and payload."""
  crc = zlib.crc32(payload, zlib.crc32(kind))
  return (
      struct.pack('>I', len(payload)) + kind + payload + struct.pack('>I', crc)
  )


def encode_png_gray(images: np.ndarray, compress_level: int = 6) -> list[bytes]:
  """PNG-encodes a batch of uint8 grayscale images (8-bit, no filtering).

  A minimal encoder (signature, IHDR, one IDAT, IEND) that is several times
  faster than pillow's for small images, because the per-image Python work is
  one ``zlib.compress`` call; any PNG decoder (pillow, TensorFlow) reads it.

  Args:
    images: uint8 ``[N, H, W]``.
    compress_level: zlib level, 0..9.

  Returns:
    ``N`` PNG byte strings.

  Example:
    >>> import io
    >>> from PIL import Image
    >>> import numpy as np
    >>> from bort_jax.data.mnist_idx import encode_png_gray
    >>> x = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    >>> png, = encode_png_gray(x)
    >>> np.array_equal(np.asarray(Image.open(io.BytesIO(png))), x[0])
    True
  """
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 3:
    raise ValueError(
        f'expected uint8 [N, H, W], got {images.dtype} {images.shape}'
    )
  n, height, width = images.shape
  # Each scanline starts with its filter type byte, 0 (None).
  rows = np.zeros((n, height, width + 1), np.uint8)
  rows[:, :, 1:] = images
  # Width, height, bit depth 8, colour type 0 (grey), deflate, filter 0, no
  # interlace.
  head = b'\x89PNG\r\n\x1a\n' + _png_chunk(
      b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)
  )
  tail = _png_chunk(b'IEND', b'')
  return [
      head
      + _png_chunk(b'IDAT', zlib.compress(r.tobytes(), compress_level))
      + tail
      for r in rows
  ]


class MnistFromIdx(tfds_mnist.MNIST, skip_registration=True):
  """The stock ``mnist`` builder, generating without TensorFlow.

  Same name, version and ``DatasetInfo`` (features, splits, supervised keys,
  citation) as ``tfds.builder('mnist')``, which reads what this one writes.
  Only the generation differs: the IDX files come from ``idx_dir`` (no
  download, no checksum) or, with ``idx_dir=None``, from tfds' download
  manager (the stock URLs, checked against the stock checksums), and are
  decoded with numpy and PNG-encoded with :func:`encode_png_gray` instead of
  TensorFlow. Not registered: ``tfds.builder('mnist')`` stays the stock one.

  Args:
    idx_dir: folder with the four IDX ``.gz`` files, or ``None`` to download.
    **kwargs: forwarded to ``tfds.core.DatasetBuilder`` (``data_dir``,
      ``file_format``...).

  Example:
    >>> from bort_jax.data.mnist_idx import MnistFromIdx
    >>> builder = MnistFromIdx(idx_dir='mnist_idx', data_dir='/tmp/tfds')
    >>> builder.download_and_prepare(file_format='array_record')  # doctest: +SKIP
  """

  name = 'mnist'
  # The stock builder's code path, so that downloads are checked against the
  # stock checksums (tfds' url_checksums/mnist.txt). tfds would otherwise look
  # it up through this module's package resources, which also fails for some
  # installs (an editable install seen as a namespace package).
  code_path = tfds_mnist.MNIST.code_path

  def __init__(
      self, *, idx_dir: str | os.PathLike[str] | None = None, **kwargs
  ):
    self._idx_dir = None if idx_dir is None else Path(idx_dir)
    super().__init__(**kwargs)

  def is_prepared(self) -> bool:
    """Whether ``mnist`` is prepared in ``data_dir`` (tfds' warning about
    a folder without ``dataset_info.json`` silenced: that is the answer)."""
    with quiet_tfds_warnings():
      return super().is_prepared()

  def _log_download_bytes(self) -> None:
    """Replaces tfds' "Downloading and preparing dataset" line, which is
    wrong for local IDX files: :func:`prepare_mnist` says what it does."""
    if self._idx_dir is None:
      super()._log_download_bytes()

  def _log_download_done(self) -> None:
    """Replaces tfds' "downloaded and prepared" line (see above)."""
    if self._idx_dir is None:
      super()._log_download_done()

  def _split_generators(self, dl_manager):
    if self._idx_dir is None:
      urls = {
          f'{split}/{i}': urllib.parse.urljoin(self.URL, name)
          for split, names in IDX_FILES.items()
          for i, name in enumerate(names)
      }
      paths = {
          k: Path(os.fspath(p)) for k, p in dl_manager.download(urls).items()
      }
      pairs = {
          split: (paths[f'{split}/0'], paths[f'{split}/1'])
          for split in IDX_FILES
      }
    else:
      pairs = {
          split: (self._idx_dir / images, self._idx_dir / labels)
          for split, (images, labels) in IDX_FILES.items()
      }
    # Read (and validate) every file before tfds starts writing.
    arrays = {split: _load_pair(*pair, split) for split, pair in pairs.items()}
    return {split: self._generate_examples(a) for split, a in arrays.items()}

  def _generate_examples(
      self, arrays: MnistArrays
  ) -> Iterator[tuple[int, dict]]:  # pytype: disable=signature-mismatch
    # Keyed by index, like the stock builder, so tfds' shuffling (a hash of
    # the key) puts the examples in the same on-disk order.
    # zlib level 1: ~2x faster to write than level 6, files ~5% larger.
    pngs = encode_png_gray(arrays.images, compress_level=1)
    for index, (png, label) in enumerate(zip(pngs, arrays.labels.tolist())):
      yield index, {'image': png, 'label': label}


def prepare_mnist(
    idx_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
) -> Path:
  """Writes tfds ``mnist`` 3.0.1 (``array_record``) into ``data_dir``.

  Idempotent: if ``data_dir`` already holds a prepared ``mnist`` 3.0.1 this
  returns at once (no IDX file is read). tfds writes into an ``incomplete.*``
  folder and renames it when done, so an interrupted run leaves no half data
  set behind. Takes about 10 s.

  Args:
    idx_dir: folder with ``train-images-idx3-ubyte.gz``,
      ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz`` and
      ``t10k-labels-idx1-ubyte.gz``.
    data_dir: the tfds data dir to write to (created if needed).

  Returns:
    The data set's folder, ``data_dir/mnist/3.0.1``.

  Raises:
    FileNotFoundError, IdxFormatError: if the IDX files are missing or bad.
    ValueError: if ``data_dir`` holds ``mnist`` in a format other than
      ``array_record`` (which ``tfds.data_source`` cannot read).

  Example:
    >>> prepare_mnist('mnist_idx', '/tmp/tfds')  # doctest: +SKIP
    PosixPath('/tmp/tfds/mnist/3.0.1')
    >>> len(tfds.data_source('mnist', split='test', data_dir='/tmp/tfds',
    ...                      download=False))  # doctest: +SKIP
    10000
  """
  data_dir = Path(data_dir).expanduser().absolute()
  # The format goes to download_and_prepare, not to the constructor, which
  # raises if data_dir holds mnist in another format.
  builder = MnistFromIdx(idx_dir=idx_dir, data_dir=os.fspath(data_dir))
  data_path = Path(os.fspath(builder.data_path))
  if builder.is_prepared():
    formats = sorted(f.value for f in builder.info.available_file_formats())
    if 'array_record' not in formats:
      raise ValueError(
          f'{data_path} already holds mnist in the format(s) {formats}; '
          'tfds.data_source needs array_record. Use another --data-dir or '
          'remove that folder.'
      )
    return data_path
  # Check the inputs before tfds creates any folder.
  for split in IDX_FILES:
    for name in IDX_FILES[split]:
      if not (Path(idx_dir) / name).is_file():
        raise FileNotFoundError(
            f'MNIST IDX file {name!r} not found in {Path(idx_dir).absolute()}'
        )
  download_config = tfds.download.DownloadConfig(try_download_gcs=False)
  logging.getLogger('bort_jax').info(
      'MNIST: preparing %s from the IDX files in %s (about 30 s)',
      data_path,
      Path(idx_dir).absolute(),
  )
  # The download manager is unused but creates its folders: keep them out of
  # data_dir.
  with tempfile.TemporaryDirectory(prefix='bort_mnist_dl_') as download_dir:
    builder.download_and_prepare(
        download_dir=download_dir,
        download_config=download_config,
        file_format='array_record',
    )
  return data_path


def verify_prepared(data_dir: str | os.PathLike[str]) -> dict[str, int]:
  """Reads back a prepared ``mnist``: every split's files and examples.

  ``is_prepared`` only looks at ``dataset_info.json``; this checks that
  each split's record files exist and are not empty, that the split holds
  the number of examples its metadata says, and that its first and last
  examples decode.

  Args:
    data_dir: the tfds data dir holding ``mnist/3.0.1``.

  Returns:
    ``{split: number of examples}``, counted from the data read back.

  Raises:
    FileNotFoundError: ``mnist`` is not prepared there, or a split's file
      is missing or empty (the message names it and says how to rebuild).
    IdxFormatError: a split holds another number of examples than its
      metadata says, or its examples do not decode.

  Example:
    >>> verify_prepared('/tmp/tfds')  # doctest: +SKIP
    {'train': 60000, 'test': 10000}
  """
  builder = MnistFromIdx(data_dir=os.fspath(data_dir))
  data_path = Path(os.fspath(builder.data_path))
  rebuild = f'remove {data_path} and run bort-prepare-mnist again'
  if not builder.is_prepared():
    raise FileNotFoundError(f'mnist is not prepared in {data_dir}')
  counts = {}
  for split, info in builder.info.splits.items():
    paths = [Path(os.fspath(f)) for f in info.filepaths]
    for path in paths:
      if not path.is_file() or not path.stat().st_size:
        state = 'missing' if not path.exists() else 'empty'
        raise FileNotFoundError(
            f'mnist in {data_path} is incomplete: the {split} split file '
            f'{path.name} is {state}; {rebuild}'
        )
    try:
      source = builder.as_data_source(split=split)
      count = len(source)
      if count:
        for index in (0, count - 1):
          with quiet_tfds_warnings():  # tfds decodes with pillow: no OpenCV
            example = source[index]
          if example['image'].shape != (_IMAGE_SIZE, _IMAGE_SIZE, 1):
            raise ValueError(f'image shape {example["image"].shape}')
    except Exception as error:  # array_record/decoder errors vary
      raise IdxFormatError(
          f'mnist in {data_path}: the {split} split does not read back '
          f'({type(error).__name__}: {error}); {rebuild}'
      ) from error
    if count != info.num_examples:
      raise IdxFormatError(
          f'mnist in {data_path}: the {split} split holds {count} examples, its '
          f'metadata says {info.num_examples}; {rebuild}'
      )
    counts[split] = count
  return counts


def find_idx_files(idx_dir: str | os.PathLike[str]) -> Path:
  """``idx_dir``, resolved, after checking that it holds the four IDX files.

  Raises:
    FileNotFoundError: a file is missing; the message names the four.
  """
  idx_dir = Path(idx_dir).expanduser()
  names = [name for pair in IDX_FILES.values() for name in pair]
  if not all((idx_dir / name).is_file() for name in names):
    raise FileNotFoundError(
        f'{idx_dir} does not hold the four MNIST IDX files {names}'
    )
  return idx_dir.resolve()


def ensure_mnist(
    data_dir: str | os.PathLike[str],
    idx_dir: str | os.PathLike[str] | None = None,
) -> bool:
  """Prepares ``mnist`` in ``data_dir`` from the IDX files if it is missing.

  Args:
    data_dir: the tfds data dir.
    idx_dir: folder with the four IDX ``.gz`` files, or ``None``.

  Returns:
    Whether MNIST is prepared now. False when it is missing and no
    ``idx_dir`` was given; opening it then raises the data package's
    error, which says how to prepare it.

  Raises:
    FileNotFoundError: ``idx_dir`` lacks one of the IDX files, or a
      prepared ``mnist`` lacks a split's file (see :func:`verify_prepared`).

  Example:
    >>> ensure_mnist('/tmp/tfds', 'mnist_idx')  # doctest: +SKIP
    True
  """
  if MnistFromIdx(data_dir=os.fspath(data_dir)).is_prepared():
    verify_prepared(data_dir)  # not only its metadata
    return True
  if idx_dir is None:
    return False
  prepare_mnist(find_idx_files(idx_dir), data_dir)
  return True
