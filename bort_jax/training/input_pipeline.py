"""The config's data: splits, batches of this process, the model's input shape.

A thin layer over :mod:`bort_jax.data`: it applies the config's subset,
in-memory, resolution and worker settings, and keeps the training batches'
Grain iterator across epochs (:class:`TrainBatches`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import logging
from collections.abc import Iterator
from typing import Any

import ml_collections

from bort_jax import data
from bort_jax.data import transforms

logger = logging.getLogger('bort_jax')


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


class TrainBatches:
  """The training batches of a run: one Grain iterator over all its epochs.

  The iterator reads ``data.train_dataset(...)[start:]``, the run's batches
  from global step ``start`` on. Its position is checkpointed with the
  train state (:meth:`state`) and restored from it (:meth:`resume`), so a
  run stopped mid-epoch goes on at the exact next batch without replaying
  the epoch. Where the saved state does not fit this run's layout (saved
  by another number of processes or worker processes, or by a version
  without it), the iterator is rebuilt at the checkpoint's step instead:
  the batches are the same, since they do not depend on either count.
  """

  def __init__(
      self,
      config: ml_collections.ConfigDict,
      source: data.Source,
      *,
      start: int = 0,
  ):
    dataset = data.train_dataset(
        source,
        batch_size=config.batch_size,
        seed=config.seed,
        num_epochs=config.epochs,
        augment=config.augment,
    )
    self._start = start
    self._iterator = data.make_iterator(
        dataset[start:],
        num_workers=config.data_workers,
        num_threads=config.data_threads,
    )

  @classmethod
  def resume(
      cls,
      config: ml_collections.ConfigDict,
      source: data.Source,
      *,
      step: int,
      saved: Any,
  ) -> TrainBatches:
    """The batches from global step ``step``, positioned by the ``saved``
    :meth:`state` of checkpoint ``step`` where it fits, else rebuilt there.

    Raises:
      ValueError: ``saved`` fits this layout but is at another step than
        ``step`` (the checkpoint's items disagree).
    """
    iterator = saved.get('iterator') if isinstance(saved, dict) else None
    position = data.iterator_position(iterator)
    if (
        position is None
        or not isinstance(saved.get('start'), int)
        or _workers(iterator) != config.data_workers
    ):
      if saved is not None:
        logger.info(
            'input iterator rebuilt at step %d: its saved state does not fit '
            'this run (another number of worker processes, or another format)',
            step,
        )
      return cls(config, source, start=step)
    if saved['start'] + position != step:
      raise ValueError(
          f'the saved input iterator is at step {saved["start"] + position}, '
          f'the train state at step {step}'
      )
    batches = cls(config, source, start=saved['start'])
    batches._iterator.set_state(iterator)  # pylint: disable=protected-access
    return batches

  def take(self, count: int) -> Iterator[data.Batch]:
    """The next ``count`` batches (fewer at the end of the run)."""
    return itertools.islice(self._iterator, count)

  def state(self) -> dict[str, Any]:
    """JSON-ready: the first step of the iterator and its Grain state."""
    return {'start': self._start, 'iterator': self._iterator.get_state()}

  def close(self) -> None:
    """Stops the worker processes, if any."""
    self._iterator.close()


def _workers(state: dict[str, Any]) -> int:
  """Worker processes of the iterator that saved ``state`` (0: none)."""
  return len(state.get('iterators_in_use_states', ()))


def eval_batches(
    config: ml_collections.ConfigDict, source: data.Source
) -> Iterator[data.Batch]:
  """This process' rows of the padded, masked eval batches."""
  iterator = data.make_iterator(
      data.eval_dataset(source, batch_size=config.eval_batch_size),
      num_workers=config.data_workers,
      num_threads=config.data_threads,
  )
  with contextlib.closing(iterator):
    yield from iterator
