"""Image decoding, augmentation and normalisation with numpy and pillow.

Every random transform takes its randomness as an array of uniforms in
``[0, 1)`` with one row per example (``u[i]`` drives example ``i``) instead
of a random generator. The pipeline draws these rows for the *global* batch
and each process slices its own, so a process' augmentation does not depend
on how many processes share the batch.

Fixed-size transforms (MNIST, CIFAR-10) act on a whole uint8 ``[B, H, W, C]``
batch at once. ImageNet's act per example on encoded images (or decoded
arrays of varying size) and accept a ``map_fn`` to spread that work over
threads (pillow's JPEG decoder and resizer release the GIL).
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Union

import numpy as np
from PIL import Image

__all__ = [
    'center_crop_box',
    'crop_and_resize',
    'decode_image',
    'flip_left_right',
    'imagenet_eval_transform',
    'imagenet_train_transform',
    'inception_crop_boxes',
    'identity_transform',
    'normalize',
    'pad_crop_flip',
    'pad_crop_flip_transform',
]

# An encoded image (PNG/JPEG bytes) or an already decoded uint8 [H, W, C].
ImageLike = Union[bytes, np.ndarray]
MapFn = Callable[[Callable[..., Any], Sequence[Any]], Any]

_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_PNG_CHANNELS = {0: 1, 2: 3}  # colour type -> channels (grey, RGB)


_IHDR = struct.Struct('>IIBBBBB')
_U32 = struct.Struct('>I')


def _decode_unfiltered_png(data: bytes) -> np.ndarray | None:
  """Decodes a simple PNG: 8-bit grey/RGB, one IDAT chunk, unfiltered rows.

  That is what :func:`bort_jax.data.mnist_idx.encode_png_gray` writes; one
  ``zlib.decompress`` and a reshape, several times faster than pillow for
  small images. Returns ``None`` for any other PNG (the caller falls back to
  pillow).
  """
  # Signature (8 bytes), IHDR chunk (8 + 13 + 4), then the IDAT chunk.
  if (
      data[:8] != _PNG_SIGNATURE
      or data[12:16] != b'IHDR'
      or data[37:41] != b'IDAT'
  ):
    return None
  width, height, depth, colour, _, _, interlace = _IHDR.unpack_from(data, 16)
  if depth != 8 or interlace or colour not in _PNG_CHANNELS:
    return None
  (length,) = _U32.unpack_from(data, 33)
  if data[49 + length : 53 + length] != b'IEND':  # Several IDAT chunks.
    return None
  try:
    raw = zlib.decompress(data[41 : 41 + length])
  except zlib.error:
    return None
  channels = _PNG_CHANNELS[colour]
  row = 1 + width * channels
  # Every row must have filter type 0 (None).
  if len(raw) != height * row or raw[::row] != bytes(height):
    return None
  rows = np.frombuffer(raw, np.uint8).reshape(height, row)
  return rows[:, 1:].reshape(height, width, channels)


def decode_image(image: ImageLike, channels: int) -> np.ndarray:
  """Decodes PNG/JPEG bytes to uint8 ``[H, W, channels]``.

  Arrays pass through (with a channel axis added to 2-D ones).

  Args:
    image: encoded bytes or a uint8 array.
    channels: 1 (grey) or 3 (RGB).

  Returns:
    The uint8 image.

  Example:
    >>> import io
    >>> from PIL import Image
    >>> from bort_jax.data.transforms import decode_image
    >>> buf = io.BytesIO()
    >>> Image.new('RGB', (5, 4), (1, 2, 3)).save(buf, format='PNG')
    >>> decode_image(buf.getvalue(), 3).shape
    (4, 5, 3)
  """
  if isinstance(image, np.ndarray):
    return image[..., None] if image.ndim == 2 else image
  fast = _decode_unfiltered_png(image)
  if fast is not None and fast.shape[-1] == channels:
    return fast
  with Image.open(io.BytesIO(image)) as pil:
    pil = pil.convert('L' if channels == 1 else 'RGB')
    array = np.asarray(pil)
  return array[..., None] if array.ndim == 2 else array


def normalize(
    images: np.ndarray, mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
  """Scales uint8 images to ``[0, 1]`` then standardises each channel.

  Args:
    images: uint8 ``[..., C]``.
    mean: per-channel mean of the ``[0, 1]``-scaled pixels (length ``C``).
    std: per-channel standard deviation, same scale.

  Returns:
    float32 ``(images / 255 - mean) / std``.

  Example:
    >>> import numpy as np
    >>> from bort_jax.data.transforms import normalize
    >>> normalize(np.full((1, 1, 1), 255, np.uint8), [0.5], [0.5])
    array([[[1.]]], dtype=float32)
  """
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)
  scale = 1.0 / (255.0 * std)
  return images.astype(np.float32) * scale - mean / std


def flip_left_right(images: np.ndarray, flip: np.ndarray) -> np.ndarray:
  """Mirrors the images ``[B, H, W, C]`` where ``flip[b]`` is true."""
  return np.where(flip[:, None, None, None], images[:, :, ::-1], images)


def pad_crop_flip(
    images: np.ndarray, offsets: np.ndarray, flip: np.ndarray, pad: int
) -> np.ndarray:
  """Zero-pads by ``pad`` pixels, crops back to size at ``offsets``, flips.

  Args:
    images: uint8 ``[B, H, W, C]``.
    offsets: int ``[B, 2]``, the (row, column) of each crop in the padded
      image, in ``0..2 * pad``.
    flip: bool ``[B]``, mirror left-right after cropping.
    pad: padding on every side.

  Returns:
    Augmented ``[B, H, W, C]``, same dtype.

  Example:
    >>> import numpy as np
    >>> from bort_jax.data.transforms import pad_crop_flip
    >>> x = np.arange(4, dtype=np.uint8).reshape(1, 2, 2, 1)
    >>> pad_crop_flip(x, np.array([[0, 0]]), np.array([False]), 1)[0, ..., 0]
    array([[0, 0],
           [0, 0]], dtype=uint8)
  """
  b, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  rows = offsets[:, 0, None] + np.arange(h)  # [B, H]
  cols = offsets[:, 1, None] + np.arange(w)  # [B, W]
  crops = padded[
      np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]
  ]
  return flip_left_right(crops, flip)


def identity_transform(
    images: np.ndarray, u: np.ndarray, map_fn: MapFn = map
) -> np.ndarray:
  """No augmentation (MNIST; every eval transform of fixed-size data)."""
  del u, map_fn
  return images


def pad_crop_flip_transform(
    images: np.ndarray, u: np.ndarray, map_fn: MapFn = map, *, pad: int = 4
) -> np.ndarray:
  """CIFAR augmentation: ``pad``-pixel zero pad, random crop, random flip.

  Args:
    images: uint8 ``[B, H, W, C]``.
    u: uniforms ``[B, 3]``: crop row, crop column, flip.
    map_fn: unused (the batch is processed at once).
    pad: padding on every side.

  Returns:
    uint8 ``[B, H, W, C]``.
  """
  del map_fn
  offsets = np.minimum((u[:, :2] * (2 * pad + 1)).astype(np.int64), 2 * pad)
  return pad_crop_flip(images, offsets, u[:, 2] < 0.5, pad)


# Inception-style random resized crop (Szegedy et al. 2015), as in torchvision.
INCEPTION_AREA = (0.08, 1.0)
INCEPTION_LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))
INCEPTION_ATTEMPTS = 10
IMAGENET_TRAIN_UNIFORMS = 4 * INCEPTION_ATTEMPTS + 1


def inception_crop_boxes(
    heights: np.ndarray, widths: np.ndarray, u: np.ndarray
) -> np.ndarray:
  """Random crop boxes covering 8%-100% of the area, aspect ratio 3/4-4/3.

  Vectorised over the batch. Each example gets ``INCEPTION_ATTEMPTS`` tries
  (area fraction, log aspect ratio, row, column from ``u``); the first that
  fits inside the image wins. If none fits, the box is the centred crop of
  the largest size whose aspect ratio is clipped to 3/4-4/3.

  Args:
    heights: int ``[B]`` image heights.
    widths: int ``[B]`` image widths.
    u: uniforms ``[B, >= 4 * INCEPTION_ATTEMPTS]``.

  Returns:
    int ``[B, 4]`` boxes ``(top, left, height, width)``.

  Example:
    >>> import numpy as np
    >>> from bort_jax.data.transforms import inception_crop_boxes
    >>> u = np.random.default_rng(0).random((3, 40))
    >>> boxes = inception_crop_boxes(np.array([100] * 3), np.array([80] * 3), u)
    >>> bool(np.all(boxes[:, 0] + boxes[:, 2] <= 100))
    True
  """
  heights = np.asarray(heights, np.int64)
  widths = np.asarray(widths, np.int64)
  n = INCEPTION_ATTEMPTS
  u = u[:, : 4 * n].reshape(-1, n, 4)
  area = (heights * widths)[:, None].astype(np.float64)
  target = area * (
      INCEPTION_AREA[0] + u[..., 0] * (INCEPTION_AREA[1] - INCEPTION_AREA[0])
  )
  ratio = np.exp(
      INCEPTION_LOG_RATIO[0]
      + u[..., 1] * (INCEPTION_LOG_RATIO[1] - INCEPTION_LOG_RATIO[0])
  )
  w = np.round(np.sqrt(target * ratio)).astype(np.int64)
  h = np.round(np.sqrt(target / ratio)).astype(np.int64)
  ok = (w > 0) & (h > 0) & (w <= widths[:, None]) & (h <= heights[:, None])
  first = np.argmax(ok, axis=1)
  pick = lambda a: np.take_along_axis(a, first[:, None], axis=1)[:, 0]  # noqa: E731
  h, w = pick(h), pick(w)
  top = np.floor(pick(u[..., 2]) * (heights - h + 1)).astype(np.int64)
  left = np.floor(pick(u[..., 3]) * (widths - w + 1)).astype(np.int64)
  boxes = np.stack([top, left, h, w], axis=1)

  # Fallback: centre crop with the aspect ratio clipped to the allowed range.
  fh, fw = heights.copy(), widths.copy()
  in_ratio = widths / heights
  lo, hi = math.exp(INCEPTION_LOG_RATIO[0]), math.exp(INCEPTION_LOG_RATIO[1])
  narrow, wide = in_ratio < lo, in_ratio > hi
  fh = np.where(narrow, np.round(widths / lo).astype(np.int64), fh)
  fw = np.where(wide, np.round(heights * hi).astype(np.int64), fw)
  fallback = np.stack([(heights - fh) // 2, (widths - fw) // 2, fh, fw], axis=1)
  return np.where(ok.any(axis=1)[:, None], boxes, fallback)


def center_crop_box(
    height: int, width: int, size: int, resize: int
) -> tuple[float, ...]:
  """The box that "resize the shorter side to ``resize``, centre-crop ``size``"
  selects, in the original image's coordinates: ``(top, left, h, w)``."""
  side = min(height, width) * size / resize
  return ((height - side) / 2, (width - side) / 2, side, side)


def crop_and_resize(
    image: ImageLike, box: Sequence[float], size: int, channels: int = 3
) -> np.ndarray:
  """Decodes ``image``, crops ``box`` ``(top, left, h, w)``, resizes to square.

  A single pillow resize with a source box (bilinear, antialiased when
  shrinking), equivalent to cropping then resizing.

  Args:
    image: encoded bytes or uint8 ``[H, W, C]``.
    box: crop in pixel coordinates, may be fractional.
    size: output side.
    channels: 1 or 3.

  Returns:
    uint8 ``[size, size, channels]``.
  """
  if isinstance(image, np.ndarray):
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  else:
    pil = Image.open(io.BytesIO(image))
  pil = pil.convert('L' if channels == 1 else 'RGB')
  top, left, h, w = (float(v) for v in box)
  out = pil.resize(
      (size, size),
      Image.Resampling.BILINEAR,
      box=(left, top, left + w, top + h),
  )
  array = np.asarray(out)
  return array[..., None] if array.ndim == 2 else array


def _image_size(image: ImageLike) -> tuple[int, int]:
  """(height, width) without decoding the pixels."""
  if isinstance(image, np.ndarray):
    return image.shape[0], image.shape[1]
  with Image.open(io.BytesIO(image)) as pil:
    return pil.height, pil.width


def imagenet_train_transform(
    images: Sequence[ImageLike],
    u: np.ndarray,
    map_fn: MapFn = map,
    *,
    size: int = 224,
) -> np.ndarray:
  """Inception-style random resized crop to ``size`` and random flip.

  Args:
    images: ``B`` encoded images or uint8 arrays of any size.
    u: uniforms ``[B, IMAGENET_TRAIN_UNIFORMS]``: crop attempts, then flip.
    map_fn: ``map``-like function for the per-image work (e.g. a thread
      pool's ``map``).
    size: output side.

  Returns:
    uint8 ``[B, size, size, 3]``.
  """
  hw = np.array(list(map_fn(_image_size, images)), np.int64).reshape(-1, 2)
  boxes = inception_crop_boxes(hw[:, 0], hw[:, 1], u)
  crops = list(
      map_fn(lambda im, box: crop_and_resize(im, box, size), images, boxes)
  )
  batch = np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)
  return flip_left_right(batch, u[:, 4 * INCEPTION_ATTEMPTS] < 0.5)


def imagenet_eval_transform(
    images: Sequence[ImageLike],
    u: np.ndarray,
    map_fn: MapFn = map,
    *,
    size: int = 224,
    resize: int = 256,
) -> np.ndarray:
  """Resize the shorter side to ``resize`` and centre-crop ``size``.

  Args:
    images: ``B`` encoded images or uint8 arrays of any size.
    u: unused (deterministic).
    map_fn: ``map``-like function for the per-image work.
    size: output side.
    resize: shorter side before cropping.

  Returns:
    uint8 ``[B, size, size, 3]``.
  """
  del u

  def one(image):
    height, width = _image_size(image)
    return crop_and_resize(
        image, center_crop_box(height, width, size, resize), size
    )

  crops = list(map_fn(one, images))
  return np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)
