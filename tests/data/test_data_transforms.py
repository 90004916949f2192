"""bort_jax.data.transforms: decoding, augmentation, normalisation."""

import io
import math

import numpy as np
import pytest
from PIL import Image

from bort_jax.data import transforms


def png_bytes(array: np.ndarray, **save_kwargs) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(
      buffer, format='PNG', **save_kwargs
  )
  return buffer.getvalue()


def jpeg_bytes(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='JPEG', quality=95)
  return buffer.getvalue()


@pytest.mark.parametrize('channels', [1, 3])
@pytest.mark.parametrize('encoding', ['png', 'array'])
def test_decode_image(rng, channels, encoding):
  image = rng.integers(0, 256, (9, 7, channels), dtype=np.uint8)
  # Pillow filters the rows (slow path); arrays pass through.
  source = png_bytes(image) if encoding == 'png' else image
  np.testing.assert_array_equal(
      transforms.decode_image(source, channels), image
  )


def test_decode_image_adds_channel_axis(rng):
  image = rng.integers(0, 256, (4, 5), dtype=np.uint8)
  assert transforms.decode_image(image, 1).shape == (4, 5, 1)


def test_normalize_matches_formula(rng):
  images = rng.integers(0, 256, (2, 3, 3, 3), dtype=np.uint8)
  mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
  out = transforms.normalize(images, mean, std)
  assert out.dtype == np.float32
  expected = (images / 255.0 - np.array(mean)) / np.array(std)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_pad_crop_flip_centre_offset_is_identity(rng):
  images = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
  out = transforms.pad_crop_flip(
      images, np.full((3, 2), 4), np.zeros(3, bool), pad=4
  )
  np.testing.assert_array_equal(out, images)
  flipped = transforms.pad_crop_flip(
      images, np.full((3, 2), 4), np.ones(3, bool), pad=4
  )
  np.testing.assert_array_equal(flipped, images[:, :, ::-1])


@pytest.mark.parametrize('dy, dx', [(0, 0), (8, 8), (1, 6)])
def test_pad_crop_flip_shifts(rng, dy, dx):
  images = rng.integers(1, 256, (1, 8, 8, 1), dtype=np.uint8)
  out = transforms.pad_crop_flip(
      images, np.array([[dy, dx]]), np.array([False]), pad=4
  )
  padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
  np.testing.assert_array_equal(out, padded[:, dy : dy + 8, dx : dx + 8])


def test_pad_crop_flip_transform_uses_all_offsets():
  u = np.random.default_rng(1).random((4000, 3))
  offsets = np.minimum((u[:, :2] * 9).astype(int), 8)
  assert set(offsets.ravel().tolist()) == set(range(9))
  images = np.zeros((4000, 4, 4, 1), np.uint8)
  assert transforms.pad_crop_flip_transform(images, u).shape == images.shape


def test_inception_crop_boxes_valid():
  rng = np.random.default_rng(0)
  n = 500
  heights = rng.integers(100, 600, n)
  # Aspect ratios in [3/4, 4/3]: the fallback, if any, is the whole image.
  widths = np.round(
      heights * np.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3), n))
  ).astype(int)
  u = rng.random((n, transforms.IMAGENET_TRAIN_UNIFORMS))
  top, left, h, w = transforms.inception_crop_boxes(heights, widths, u).T
  assert np.all((top >= 0) & (left >= 0) & (h > 0) & (w > 0))
  assert np.all((top + h <= heights) & (left + w <= widths))
  # Up to rounding to whole pixels.
  area = h * w / (heights * widths)
  assert area.min() >= 0.08 * 0.85 and area.max() <= 1.0
  ratio = w / h
  assert ratio.min() >= 3 / 4 * 0.9 and ratio.max() <= 4 / 3 * 1.1
  assert len(set(top.tolist())) > 50  # Positions vary.


def test_inception_crop_boxes_fallback_is_central():
  # Attempts with area 100% and extreme ratio never fit a very wide image.
  u = np.zeros((1, transforms.IMAGENET_TRAIN_UNIFORMS))
  u[:, 0:40:4] = 1.0  # area fraction 1.0
  u[:, 1:40:4] = 0.0  # aspect ratio 3/4: taller than the image allows
  top, left, h, w = transforms.inception_crop_boxes(
      np.array([10]), np.array([100]), u
  )[0]
  assert (h, w) == (10, round(10 * 4 / 3))
  assert (top, left) == (0, (100 - w) // 2)


def test_center_crop_box():
  top, left, h, w = transforms.center_crop_box(300, 400, size=224, resize=256)
  assert h == w == pytest.approx(300 * 224 / 256)
  assert top == pytest.approx((300 - h) / 2) and left == pytest.approx(
      (400 - w) / 2
  )


@pytest.mark.parametrize('encoding', ['jpeg', 'png', 'array'])
@pytest.mark.parametrize('transform', ['train', 'eval'])
def test_imagenet_transforms_shape(rng, encoding, transform):
  sizes = [(37, 50), (300, 200), (240, 320)]
  arrays = [rng.integers(0, 256, (*s, 3), dtype=np.uint8) for s in sizes]
  encode = {'jpeg': jpeg_bytes, 'png': png_bytes, 'array': lambda a: a}[
      encoding
  ]
  images = [encode(a) for a in arrays]
  u = rng.random((len(images), transforms.IMAGENET_TRAIN_UNIFORMS))
  fn = (
      transforms.imagenet_train_transform
      if transform == 'train'
      else transforms.imagenet_eval_transform
  )
  out = fn(images, u)
  assert out.shape == (3, 224, 224, 3) and out.dtype == np.uint8


def test_imagenet_eval_transform_of_constant_image_is_constant():
  image = np.full((300, 500, 3), (10, 120, 250), np.uint8)
  out = transforms.imagenet_eval_transform(
      [jpeg_bytes(image)], np.zeros((1, 0))
  )
  assert np.abs(out.astype(int) - [10, 120, 250]).max() <= 3


def test_crop_and_resize_selects_box():
  image = np.zeros((100, 100, 3), np.uint8)
  image[50:, 50:] = 255  # Bottom-right quadrant white.
  # Pillow's antialiasing filter reaches a pixel beyond the box: skip the rim.
  out = transforms.crop_and_resize(image, (50, 50, 50, 50), size=10)
  assert out.shape == (10, 10, 3) and out[1:, 1:].min() == 255
  out = transforms.crop_and_resize(image, (0, 0, 50, 50), size=10)
  assert out[:-1, :-1].max() == 0


def test_inception_log_ratio_constants():
  assert math.exp(transforms.INCEPTION_LOG_RATIO[0]) == pytest.approx(3 / 4)
  assert transforms.IMAGENET_TRAIN_UNIFORMS == 41
