"""Deterministic, multi-host input pipelines yielding numpy batches.

Batches are dicts ready for ``jax.device_put``::

  {'image': float32 [B, H, W, C], 'label': int32 [B], 'mask': bool [B]}

``batch_size`` is always the *global* batch size. With ``process_count``
processes each one yields ``batch_size // process_count`` examples per step:
process ``p`` gets rows ``p * B_local:(p + 1) * B_local`` of every global
batch, so the shards are disjoint and, concatenated in process order, equal
the single-process batch (augmentation included: its random numbers are
drawn for the global batch and sliced, see :mod:`bort_jax.data.transforms`).

Training: the order is ``np.random.default_rng([seed, epoch, 0])``'s
permutation of the split, so a (seed, epoch) pair fixes the batches; the last
partial batch is dropped. Evaluation: the split in stored order, every
example exactly once; the last global batch is padded (zero images, label 0)
and ``mask`` is False on the padding. All processes yield the same number of
batches.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
from collections.abc import Iterator

import numpy as np

from bort_jax.data import transforms
from bort_jax.data.sources import Source, open_split
from bort_jax.data.specs import DatasetSpec

__all__ = [
    'Batch',
    'epoch_permutation',
    'make_eval_iterator',
    'make_train_iterator',
    'steps_per_epoch',
]

Batch = dict[str, np.ndarray]

# Stream tags of the SeedSequence entropy [seed, epoch, tag, ...].
_SHUFFLE, _AUGMENT = 0, 1


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  """The example order of one training epoch.

  Args:
    num_examples: size of the split.
    seed: non-negative run seed.
    epoch: non-negative epoch number.

  Returns:
    int64 permutation of ``range(num_examples)``, a function of
    ``(seed, epoch)`` only.

  Example:
    >>> p = epoch_permutation(5, seed=0, epoch=1)
    >>> sorted(p.tolist()), bool((p == epoch_permutation(5, 0, 1)).all())
    ([0, 1, 2, 3, 4], True)
  """
  return np.random.default_rng([seed, epoch, _SHUFFLE]).permutation(
      num_examples
  )


def steps_per_epoch(num_examples: int, batch_size: int, *, train: bool) -> int:
  """Batches per epoch: remainder dropped (train) or padded (eval).

  Example:
    >>> steps_per_epoch(10, 4, train=True), steps_per_epoch(10, 4, train=False)
    (2, 3)
  """
  if train:
    return num_examples // batch_size
  return -(-num_examples // batch_size)


def _processes(
    process_index: int | None, process_count: int | None
) -> tuple[int, int]:
  """``(index, count)``, defaulting to this JAX process."""
  if process_index is None or process_count is None:
    import jax  # pylint: disable=import-outside-toplevel

    process_index = (
        jax.process_index() if process_index is None else process_index
    )
    process_count = (
        jax.process_count() if process_count is None else process_count
    )
  if not 0 <= process_index < process_count:
    raise ValueError(
        f'process_index {process_index} not in [0, {process_count})'
    )
  return process_index, process_count


def _local_batch_size(batch_size: int, process_count: int) -> int:
  if batch_size <= 0 or batch_size % process_count:
    raise ValueError(
        f'the global batch_size ({batch_size}) must be a positive multiple of '
        f'process_count ({process_count})'
    )
  return batch_size // process_count


def _check_non_negative(**values: int) -> None:
  for name, value in values.items():
    if value < 0:
      raise ValueError(f'{name} must be non-negative, got {value}')


def _resolve_source(
    dataset: str | Source, split: str, data_dir, download: bool
) -> Source:
  if isinstance(dataset, str):
    return open_split(dataset, split, data_dir=data_dir, download=download)
  return dataset


@contextlib.contextmanager
def _map_fn(num_threads: int):
  """``map``, or a thread pool's ``map`` for the per-image transforms."""
  if num_threads <= 0:
    yield map
    return
  with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
    yield pool.map


def _batch(
    spec: DatasetSpec, images: np.ndarray, labels: np.ndarray, mask: np.ndarray
) -> Batch:
  """Normalised float32 images, int32 labels and the bool mask."""
  return {
      'image': transforms.normalize(images, spec.mean, spec.std),
      'label': labels.astype(np.int32),
      'mask': mask,
  }


def make_train_iterator(
    dataset: str | Source,
    *,
    batch_size: int,
    seed: int,
    epoch: int = 0,
    start_step: int = 0,
    augment: bool = True,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    process_index: int | None = None,
    process_count: int | None = None,
    num_threads: int = 0,
) -> Iterator[Batch]:
  """One shuffled, augmented training epoch of this process' batch shards.

  Args:
    dataset: a data set name (its ``'train'`` split is opened) or a source
      from :func:`bort_jax.data.open_split` (reuse one across epochs,
      possibly ``in_memory=True``).
    batch_size: the global batch size (all processes together).
    seed: non-negative run seed.
    epoch: epoch number; with ``seed`` it fixes the order and augmentation.
    start_step: first step to yield (to resume mid-epoch).
    augment: apply the data set's training augmentation (else its eval
      transform, e.g. ImageNet's centre crop).
    data_dir: tfds data dir when ``dataset`` is a name.
    download: prepare the data set if missing (needs internet).
    process_index: this process (default ``jax.process_index()``).
    process_count: number of processes (default ``jax.process_count()``).
    num_threads: threads for per-image decoding/resizing (ImageNet); 0 runs
      it inline.

  Returns:
    An iterator of ``steps_per_epoch(len(source), batch_size, train=True) -
    start_step`` batches of ``batch_size // process_count`` examples.

  Raises:
    DatasetNotFoundError: not prepared and ``download`` is False (raised by
      this call, not by the first ``next``).
    ValueError: bad batch size, process or seed.

  Example:
    >>> it = make_train_iterator('mnist', batch_size=128, seed=0, epoch=0,
    ...                          data_dir='/tmp/tfds')  # doctest: +SKIP
    >>> batch = next(it)  # doctest: +SKIP
    >>> batch['image'].shape, batch['label'].dtype  # doctest: +SKIP
    ((128, 28, 28, 1), dtype('int32'))
  """
  _check_non_negative(seed=seed, epoch=epoch, start_step=start_step)
  index, count = _processes(process_index, process_count)
  local = _local_batch_size(batch_size, count)
  source = _resolve_source(dataset, 'train', data_dir, download)
  spec = source.spec
  steps = steps_per_epoch(len(source), batch_size, train=True)
  if steps == 0:
    raise ValueError(
        f'{spec.name} {source.split!r} has {len(source)} examples, fewer than '
        f'one batch of {batch_size}'
    )
  order = epoch_permutation(len(source), seed, epoch)
  transform = spec.train_transform if augment else spec.eval_transform
  rows = slice(index * local, (index + 1) * local)

  def batches() -> Iterator[Batch]:
    with _map_fn(num_threads) as map_fn:
      for step in range(start_step, steps):
        global_indices = order[step * batch_size : (step + 1) * batch_size]
        # Drawn for the whole global batch, then sliced: independent of the
        # number of processes.
        rng = np.random.default_rng([seed, epoch, _AUGMENT, step])
        u = rng.random((batch_size, spec.num_uniforms))[rows]
        examples = source.read(global_indices[rows])
        images = transform(examples.images, u, map_fn)
        yield _batch(spec, images, examples.labels, np.ones(local, bool))

  return batches()


def make_eval_iterator(
    dataset: str | Source,
    *,
    batch_size: int,
    split: str = 'eval',
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    process_index: int | None = None,
    process_count: int | None = None,
    num_threads: int = 0,
) -> Iterator[Batch]:
  """One pass over a split, every example exactly once, padded and masked.

  Args:
    dataset: a data set name (``split`` is opened) or a source from
      :func:`bort_jax.data.open_split`.
    batch_size: the global batch size (all processes together).
    split: ``'eval'`` (test/validation), ``'train'`` or a tfds split name,
      when ``dataset`` is a name.
    data_dir: tfds data dir when ``dataset`` is a name.
    download: prepare the data set if missing (needs internet).
    process_index: this process (default ``jax.process_index()``).
    process_count: number of processes (default ``jax.process_count()``).
    num_threads: threads for per-image decoding/resizing (ImageNet).

  Returns:
    An iterator of ``steps_per_epoch(len(source), batch_size, train=False)``
    batches of ``batch_size // process_count`` examples; ``mask`` is False on
    the padding of the last one. Sum ``mask`` to count examples.

  Raises:
    DatasetNotFoundError: not prepared and ``download`` is False.
    ValueError: bad batch size or process.

  Example:
    >>> it = make_eval_iterator('mnist', batch_size=512,
    ...                         data_dir='/tmp/tfds')  # doctest: +SKIP
    >>> sum(int(b['mask'].sum()) for b in it)  # doctest: +SKIP
    10000
  """
  index, count = _processes(process_index, process_count)
  local = _local_batch_size(batch_size, count)
  source = _resolve_source(dataset, split, data_dir, download)
  spec = source.spec
  n = len(source)
  steps = steps_per_epoch(n, batch_size, train=False)
  no_uniforms = np.zeros((local, 0))

  def batches() -> Iterator[Batch]:
    with _map_fn(num_threads) as map_fn:
      for step in range(steps):
        positions = step * batch_size + index * local + np.arange(local)
        mask = positions < n
        examples = source.read(positions[mask])
        real = spec.eval_transform(examples.images, no_uniforms[mask], map_fn)
        images = np.zeros((local, *spec.image_shape), np.uint8)
        labels = np.zeros((local,), np.int32)
        images[mask], labels[mask] = real, examples.labels
        batch = _batch(spec, images, labels, mask)
        batch['image'][~mask] = 0.0  # Padding is zeros after normalisation.
        yield batch

  return batches()
