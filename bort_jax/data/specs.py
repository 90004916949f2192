"""Static description of the supported data sets: splits, shapes, statistics."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

from bort_jax.data import transforms

__all__ = ['DATASETS', 'DatasetSpec', 'dataset_info']


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What the pipeline needs to know about a tfds image classification set.

  Attributes:
    name: the tfds name.
    train_split: tfds split used for ``'train'``.
    eval_split: tfds split used for ``'eval'``.
    image_shape: ``(H, W, C)`` of the batches' images.
    num_classes: number of labels.
    mean: per-channel pixel mean, pixels scaled to ``[0, 1]``.
    std: per-channel pixel standard deviation, same scale.
    fixed_size: whether every stored image has shape ``image_shape`` (then
      whole batches are decoded into one array and may be cached in memory).
    train_transform: ``(images, u, map_fn) -> uint8 [B, H, W, C]``, the
      training augmentation (see :mod:`bort_jax.data.transforms`).
    eval_transform: the deterministic evaluation transform, same signature.
    num_uniforms: columns of ``u`` that ``train_transform`` reads.
    how_to_prepare: how to provide the data set without a network, for the
      "not prepared" and "download failed" errors, with ``{data_dir}``.
    download_url: a URL of the files tfds downloads, probed before a download
      so that an unreachable network fails in seconds (``None``: no probe).
  """

  name: str
  train_split: str
  eval_split: str
  image_shape: tuple[int, int, int]
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  fixed_size: bool
  train_transform: Callable
  eval_transform: Callable
  num_uniforms: int
  how_to_prepare: str
  download_url: str | None = None

  def tfds_split(self, split: str) -> str:
    """Maps ``'train'``/``'eval'`` to tfds split names; others pass through."""
    return {'train': self.train_split, 'eval': self.eval_split}.get(
        split, split
    )


_TFDS_BUILD_HINT = (
    'on a machine with internet run `tfds build {name} --data_dir {{data_dir}} '
    '--file_format array_record` (tfds encodes the images with TensorFlow while '
    'generating, so install it there) and copy {{data_dir}}/{name} here'
)

DATASETS: dict[str, DatasetSpec] = {
    'mnist': DatasetSpec(
        name='mnist',
        train_split='train',
        eval_split='test',
        image_shape=(28, 28, 1),
        num_classes=10,
        mean=(0.1307,),
        std=(0.3081,),
        fixed_size=True,
        train_transform=transforms.identity_transform,
        eval_transform=transforms.identity_transform,
        num_uniforms=0,
        how_to_prepare=(
            'build it from the four MNIST IDX .gz files (no TensorFlow or internet '
            'needed): `bort-prepare-mnist --idx-dir <folder with the IDX files> '
            '--data-dir {data_dir}`, or `bort-train --mnist-idx-dir <that '
            'folder>`, or call bort_jax.data.mnist_idx.prepare_mnist'
        ),
        download_url='https://storage.googleapis.com/cvdf-datasets/mnist/',
    ),
    'cifar10': DatasetSpec(
        name='cifar10',
        train_split='train',
        eval_split='test',
        image_shape=(32, 32, 3),
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        fixed_size=True,
        train_transform=functools.partial(
            transforms.pad_crop_flip_transform, pad=4
        ),
        eval_transform=transforms.identity_transform,
        num_uniforms=3,
        how_to_prepare=_TFDS_BUILD_HINT.format(name='cifar10'),
        download_url='https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz',
    ),
    'imagenet2012': DatasetSpec(
        name='imagenet2012',
        train_split='train',
        eval_split='validation',
        image_shape=(224, 224, 3),
        num_classes=1000,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        fixed_size=False,
        train_transform=functools.partial(
            transforms.imagenet_train_transform, size=224
        ),
        eval_transform=functools.partial(
            transforms.imagenet_eval_transform, size=224, resize=256
        ),
        num_uniforms=transforms.IMAGENET_TRAIN_UNIFORMS,
        how_to_prepare=(
            'ImageNet cannot be downloaded automatically: put ILSVRC2012_img_train.tar '
            'and ILSVRC2012_img_val.tar in {data_dir}/downloads/manual and run `tfds '
            'build imagenet2012 --data_dir {data_dir} --file_format array_record` '
            '(tfds needs TensorFlow to generate it), or prepare it elsewhere and copy '
            '{data_dir}/imagenet2012 here'
        ),
    ),
}


def dataset_info(name: str) -> DatasetSpec:
  """The static description of a supported data set (no disk access).

  Args:
    name: ``'mnist'``, ``'cifar10'`` or ``'imagenet2012'``.

  Returns:
    Its :class:`DatasetSpec` (image shape, number of classes, statistics...).

  Raises:
    ValueError: for an unsupported name.

  Example:
    >>> from bort_jax.data import dataset_info
    >>> info = dataset_info('cifar10')
    >>> info.image_shape, info.num_classes
    ((32, 32, 3), 10)
  """
  try:
    return DATASETS[name]
  except KeyError:
    raise ValueError(
        f'unsupported data set {name!r}; supported: {sorted(DATASETS)}'
    ) from None
