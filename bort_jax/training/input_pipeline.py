"""The config's data: splits, batches of this process, the model's input shape.

A thin layer over :mod:`bort_jax.data`: it applies the config's subset,
in-memory and resolution settings.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator

import ml_collections

from bort_jax import data
from bort_jax.data import transforms


def dataset_spec(config: ml_collections.ConfigDict) -> data.DatasetSpec:
  """The config's data set, at ``config.image_size`` if set (ImageNet only).

  Raises:
    ValueError: ``image_size`` set for a fixed-size data set.
  """
  spec = data.dataset_info(config.dataset)
  size = config.image_size
  if not size or size == spec.image_shape[0]:
    return spec
  if spec.fixed_size:
    raise ValueError(
        f'image_size={size}: {spec.name} images are {spec.image_shape[0]} '
        'pixels; only ImageNet is resized'
    )
  return dataclasses.replace(
      spec,
      image_shape=(size, size, spec.image_shape[2]),
      train_transform=functools.partial(
          transforms.imagenet_train_transform, size=size
      ),
      eval_transform=functools.partial(
          transforms.imagenet_eval_transform,
          size=size,
          resize=round(size * 256 / 224),
      ),
  )


def _split_name(base: str, examples: int) -> str:
  return f'{base}[:{examples}]' if examples else base


def open_splits(
    config: ml_collections.ConfigDict,
    *,
    data_dir: str | None = None,
    download: bool = False,
) -> tuple[data.Source, data.Source]:
  """Opens the train and eval splits the config asks for.

  Args:
    config: uses ``dataset``, ``train_examples``, ``eval_examples``,
      ``in_memory`` and ``image_size``.
    data_dir: tfds data dir (default: ``$TFDS_DATA_DIR`` or tfds' default).
    download: let tfds download and prepare the data set (needs internet).

  Returns:
    ``(train, eval)`` sources.

  Raises:
    DatasetNotFoundError: not prepared and ``download`` is False; the
      message says how to prepare it.
  """
  spec = dataset_spec(config)
  in_memory = config.in_memory and spec.fixed_size
  splits = []
  for base, examples in (
      (spec.train_split, config.train_examples),
      (spec.eval_split, config.eval_examples),
  ):
    source = data.open_split(
        config.dataset,
        _split_name(base, examples),
        data_dir=data_dir,
        download=download,
        in_memory=in_memory,
    )
    splits.append(dataclasses.replace(source, spec=spec))
  return splits[0], splits[1]


def steps_per_epoch(
    config: ml_collections.ConfigDict, train_source: data.Source
) -> int:
  """Optimizer steps per epoch (the last partial batch is dropped)."""
  return data.steps_per_epoch(len(train_source), config.batch_size, train=True)


def train_batches(
    config: ml_collections.ConfigDict,
    source: data.Source,
    *,
    epoch: int,
    start_step: int = 0,
) -> Iterator[data.Batch]:
  """This process' rows of one epoch's training batches, from ``start_step``."""
  return data.make_train_iterator(
      source,
      batch_size=config.batch_size,
      seed=config.seed,
      epoch=epoch,
      start_step=start_step,
      augment=config.augment,
      num_threads=config.data_threads,
  )


def eval_batches(
    config: ml_collections.ConfigDict, source: data.Source
) -> Iterator[data.Batch]:
  """This process' rows of the padded, masked eval batches."""
  return data.make_eval_iterator(
      source, batch_size=config.eval_batch_size, num_threads=config.data_threads
  )
