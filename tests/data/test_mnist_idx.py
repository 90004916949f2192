"""bort_jax.data.mnist_idx: IDX decoding, PNG encoding, the tfds mnist it builds."""

import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.image_classification import mnist as tfds_mnist

from bort_jax.data import mnist_idx, sources, transforms
from bort_jax.programs import prepare_mnist as prepare_mnist_program

TRAIN_LABEL_COUNTS = [
    5923,
    6742,
    5958,
    6131,
    5842,
    5421,
    5918,
    6265,
    5851,
    5949,
]


def write_idx(
    path: Path, array: np.ndarray, type_code: int, compress: bool
) -> Path:
  """Writes ``array`` as an IDX file (big-endian), gzip-compressed or not."""
  header = bytes([0, 0, type_code, array.ndim]) + struct.pack(
      f'>{array.ndim}I', *array.shape
  )
  data = header + array.astype(array.dtype.newbyteorder('>')).tobytes()
  path.write_bytes(gzip.compress(data) if compress else data)
  return path


# ----------------------------------------------------------------- read_idx


@pytest.mark.parametrize('compress', [True, False], ids=['gz', 'raw'])
@pytest.mark.parametrize(
    'dtype, type_code',
    [
        (np.uint8, 0x08),
        (np.int8, 0x09),
        (np.int16, 0x0B),
        (np.int32, 0x0C),
        (np.float32, 0x0D),
        (np.float64, 0x0E),
    ],
)
def test_read_idx_round_trip(tmp_path, rng, dtype, type_code, compress):
  array = (rng.random((3, 4, 5)) * 100).astype(dtype)
  path = write_idx(tmp_path / 'x.idx', array, type_code, compress)
  out = mnist_idx.read_idx(path)
  assert out.dtype == np.dtype(dtype) and out.dtype.isnative
  np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize(
    'payload, message',
    [
        (b'\x00\x00', 'too short'),
        (
            b'\x01\x02\x08\x01' + struct.pack('>I', 2) + b'ab',
            'bad magic number',
        ),
        (
            b'\x00\x00\x07\x01' + struct.pack('>I', 2) + b'ab',
            'unknown IDX type byte 0x07',
        ),
        (b'\x00\x00\x08\x03' + struct.pack('>I', 2), 'truncated header'),
        (
            b'\x00\x00\x08\x01' + struct.pack('>I', 5) + b'abc',
            'payload has 3 bytes',
        ),
        (b'\x1f\x8b\x08\x00garbage', 'cannot decompress'),
    ],
    ids=['short', 'magic', 'type', 'header', 'size', 'gzip'],
)
def test_read_idx_rejects_malformed_files(tmp_path, payload, message):
  path = tmp_path / 'bad.idx'
  path.write_bytes(payload)
  with pytest.raises(mnist_idx.IdxFormatError, match=message) as info:
    mnist_idx.read_idx(path)
  assert str(path) in str(info.value)


def test_read_idx_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match='not found'):
    mnist_idx.read_idx(tmp_path / 'nope.gz')


@pytest.mark.parametrize(
    'images, labels, message',
    [
        (
            np.zeros((3, 28, 28), np.uint8),
            np.zeros(3, np.uint8),
            'expected 10000 images',
        ),
        (
            np.zeros((10000, 28, 28), np.uint8),
            np.zeros(9, np.uint8),
            'expected 10000 labels',
        ),
        (
            np.zeros((10000, 28, 28), np.uint8),
            np.full(10000, 10, np.uint8),
            'label 10',
        ),
        (
            np.zeros((10000, 28, 28), np.int32),
            np.zeros(10000, np.uint8),
            'magic number 0x00000803',
        ),
    ],
    ids=['image-count', 'label-count', 'label-range', 'image-dtype'],
)
def test_load_mnist_split_validates(tmp_path, images, labels, message):
  images_name, labels_name = mnist_idx.IDX_FILES['test']
  write_idx(
      tmp_path / images_name,
      images,
      0x0C if images.dtype == np.int32 else 0x08,
      True,
  )
  write_idx(tmp_path / labels_name, labels, 0x08, True)
  with pytest.raises(mnist_idx.IdxFormatError, match=message):
    mnist_idx.load_mnist_split(tmp_path, 'test')


def test_load_mnist_split_real_test_split(mnist_test_idx):
  assert mnist_test_idx.images.shape == (10000, 28, 28)
  assert mnist_test_idx.images.dtype == np.uint8
  assert mnist_test_idx.labels.shape == (10000,)


# ------------------------------------------------------------------ PNG


@pytest.mark.parametrize('shape', [(1, 1, 1), (4, 28, 28), (2, 7, 3)])
def test_encode_png_gray_decodes_exactly(rng, shape):
  images = rng.integers(0, 256, shape, dtype=np.uint8)
  pngs = mnist_idx.encode_png_gray(images)
  assert len(pngs) == shape[0]
  for png, image in zip(pngs, images):
    with Image.open(io.BytesIO(png)) as pil:
      assert pil.format == 'PNG' and pil.mode == 'L'
      np.testing.assert_array_equal(np.asarray(pil), image)
    # The pipeline's fast path reads it too.
    np.testing.assert_array_equal(
        transforms.decode_image(png, 1)[..., 0], image
    )


def test_encode_png_gray_rejects_bad_input():
  with pytest.raises(ValueError, match='uint8'):
    mnist_idx.encode_png_gray(np.zeros((2, 3, 3), np.float32))


# ------------------------------------------------- the prepared data set


def test_prepared_mnist_reads_with_plain_tfds(mnist_data_dir):
  ds = tfds.data_source('mnist', data_dir=mnist_data_dir, download=False)
  assert {name: len(split) for name, split in ds.items()} == {
      'train': 60000,
      'test': 10000,
  }
  example = ds['test'][0]
  assert (
      example['image'].shape == (28, 28, 1)
      and example['image'].dtype == np.uint8
  )
  assert 0 <= example['label'] < 10


def test_prepared_mnist_info_matches_stock_builder(mnist_data_dir, tmp_path):
  prepared = tfds.builder('mnist', data_dir=mnist_data_dir).info
  stock = tfds.builder(
      'mnist', data_dir=os.fspath(tmp_path)
  ).info  # Unprepared.
  assert prepared.features.to_json_content() == stock.features.to_json_content()
  assert prepared.features['image'].shape == (28, 28, 1)
  assert prepared.features['image'].np_dtype == np.uint8
  assert prepared.features['label'].num_classes == 10
  assert str(prepared.version) == '3.0.1' == str(stock.version)
  assert prepared.supervised_keys == stock.supervised_keys == ('image', 'label')
  assert (prepared.description, prepared.citation, prepared.homepage) == (
      stock.description,
      stock.citation,
      stock.homepage,
  )
  assert prepared.file_format.value == 'array_record'
  assert {k: v.num_examples for k, v in prepared.splits.items()} == {
      'train': 60000,
      'test': 10000,
  }


def test_prepared_mnist_statistics(mnist_train):
  """The README's checks: label counts and pixel mean of the train split."""
  assert mnist_train.images.shape == (60000, 28, 28, 1)
  assert (
      np.bincount(mnist_train.labels, minlength=10).tolist()
      == TRAIN_LABEL_COUNTS
  )
  assert mnist_train.images.mean() / 255 == pytest.approx(0.1307, abs=5e-5)


def test_prepared_mnist_records_match_idx_files(mnist_test, mnist_test_idx):
  """Every stored test example is an IDX example with its label (tfds shuffled them)."""
  digest = lambda image: hashlib.sha1(image.tobytes()).hexdigest()  # noqa: E731
  by_image = {}
  for image, label in zip(mnist_test_idx.images, mnist_test_idx.labels):
    by_image.setdefault(digest(image), set()).add(int(label))
  stored = [
      (digest(image[..., 0]), int(label))
      for image, label in zip(mnist_test.images, mnist_test.labels)
  ]
  assert all(label in by_image.get(key, ()) for key, label in stored)
  assert sorted(key for key, _ in stored) == sorted(
      digest(i) for i in mnist_test_idx.images
  )


def test_prepare_mnist_is_idempotent(
    mnist_idx_dir, mnist_data_dir, monkeypatch
):
  """On a prepared data dir nothing is read, generated or written."""
  info = Path(mnist_data_dir) / 'mnist' / '3.0.1' / 'dataset_info.json'
  before = info.stat().st_mtime_ns
  calls = []
  monkeypatch.setattr(
      mnist_idx, 'read_idx', lambda *a: calls.append('read_idx')
  )
  monkeypatch.setattr(
      mnist_idx.MnistFromIdx,
      'download_and_prepare',
      lambda *a, **k: calls.append('download_and_prepare'),
  )
  path = mnist_idx.prepare_mnist(mnist_idx_dir, mnist_data_dir)
  assert calls == []
  assert path == info.parent
  assert info.stat().st_mtime_ns == before
  assert sorted(p.name for p in Path(mnist_data_dir).iterdir()) == ['mnist']


def test_prepare_mnist_missing_idx_files_creates_nothing(tmp_path):
  data_dir = tmp_path / 'tfds'
  with pytest.raises(FileNotFoundError, match='train-images-idx3-ubyte.gz'):
    mnist_idx.prepare_mnist(tmp_path / 'no_idx_here', data_dir)
  assert not data_dir.exists()


def test_mnist_prepared_in_another_format_is_reported(mnist_data_dir, tmp_path):
  """E.g. a stock (TensorFlow-built) tfrecord mnist: not readable by data_source."""
  variant = tmp_path / 'mnist' / '3.0.1'
  variant.mkdir(parents=True)
  for name in ('dataset_info.json', 'features.json'):
    shutil.copy(Path(mnist_data_dir) / 'mnist' / '3.0.1' / name, variant / name)
  info = json.loads((variant / 'dataset_info.json').read_text())
  info['fileFormat'] = 'tfrecord'
  (variant / 'dataset_info.json').write_text(json.dumps(info))
  with pytest.raises(ValueError, match='array_record'):
    mnist_idx.prepare_mnist('unused', tmp_path)
  with pytest.raises(ValueError, match='random access'):
    sources.open_split('mnist', 'test', data_dir=tmp_path)


# ------------------------------------------------------------------- CLI


def test_cli_on_prepared_dir(mnist_idx_dir, mnist_data_dir, capsys):
  assert (
      prepare_mnist_program.main(
          ['--idx-dir', os.fspath(mnist_idx_dir), '--data-dir', mnist_data_dir]
      )
      == 0
  )
  out = capsys.readouterr().out
  assert 'train 60000' in out and 'test 10000' in out and mnist_data_dir in out


def test_cli_reports_errors(tmp_path, capsys):
  assert (
      prepare_mnist_program.main(
          [
              '--idx-dir',
              os.fspath(tmp_path),
              '--data-dir',
              os.fspath(tmp_path / 'd'),
          ]
      )
      == 1
  )
  assert 'not found' in capsys.readouterr().err


def test_cli_requires_idx_dir(capsys, monkeypatch):
  monkeypatch.delenv(prepare_mnist_program.IDX_DIR_ENV, raising=False)
  with pytest.raises(SystemExit):
    prepare_mnist_program.main([])
  assert '--idx-dir' in capsys.readouterr().err


# ------------------------------------------------- the online path, offline


def test_download_path_uses_stock_urls_and_same_builder(
    mnist_idx_dir, tmp_path, monkeypatch
):
  """``download=True`` probes the stock host, then runs the tfds download
  manager (both stubbed: the probe passes, downloads are local files)."""
  requested, probed = [], []

  def fake_download(self, urls):
    requested.extend(urls.values())
    return {
        k: mnist_idx_dir / Path(urllib.parse.urlparse(u).path).name
        for k, u in urls.items()
    }

  monkeypatch.setattr(tfds.download.DownloadManager, 'download', fake_download)
  monkeypatch.setattr(
      sources,
      '_check_reachable',
      lambda spec, data_dir: probed.append(spec.download_url),
  )
  builder = sources.prepare_builder('mnist', data_dir=tmp_path, download=True)
  assert probed == [tfds_mnist.MNIST.URL]
  assert sorted(requested) == sorted(
      urllib.parse.urljoin(tfds_mnist.MNIST.URL, name)
      for pair in mnist_idx.IDX_FILES.values()
      for name in pair
  )
  assert builder.is_prepared()
  assert sources.num_examples('mnist', 'train', data_dir=tmp_path) == 60000
  assert sources.num_examples('mnist', 'eval', data_dir=tmp_path) == 10000
