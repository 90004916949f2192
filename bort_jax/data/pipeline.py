"""Deterministic, multi-host input pipelines on Grain, yielding numpy batches.

Batches are dicts ready for ``jax.device_put``::

  {'image': float32 [B, H, W, C], 'label': int32 [B], 'mask': bool [B]}

The pipelines are ``grain.MapDataset``\\ s whose element ``i`` is this
process' share of global batch ``i``: :func:`train_dataset` (shuffled,
augmented, every epoch one after the other) and :func:`eval_dataset` (every
example once, padded and masked). :func:`make_iterator` turns one into a
``grain.DatasetIterator`` with reading threads and, optionally, worker
processes (``mp_prefetch``); its ``get_state()`` / ``set_state()`` resume it
at the exact next batch, and :mod:`bort_jax.training` saves that state in
the same Orbax checkpoint as the train state.

``batch_size`` is always the *global* batch size. With ``process_count``
processes each one yields ``batch_size // process_count`` examples per step:
process ``p`` gets rows ``p * B_local:(p + 1) * B_local`` of every global
batch, so the shards are disjoint and, concatenated in process order, equal
the single-process batch (augmentation included: its random numbers are
drawn for the global batch and sliced, see :mod:`bort_jax.data.transforms`).
The batches are therefore the same for any number of processes, worker
processes and threads.

Training: the order of epoch ``e`` is ``np.random.default_rng([seed, e,
0])``'s permutation of the split (:func:`epoch_permutation`), so a ``(seed,
epoch)`` pair fixes the batches; the last partial batch is dropped.
Evaluation: the split in stored order, every example exactly once; the last
global batch is padded (zero images, label 0) and ``mask`` is False on the
padding. All processes yield the same number of batches.

Why a batch per element: an element per record costs Grain a few
microseconds of Python per example, which is most of the time on MNIST; a
batch is read with one ``source.read`` call and transformed with vectorised
numpy, so Grain's own cost is paid once per batch (about 10 us, see
``benchmarks/input_pipeline.py``).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from bort_jax.data import transforms
from bort_jax.data.sources import Source, open_split
from bort_jax.data.specs import DatasetSpec

# Grain imports orbax: it is imported where a pipeline is built, so that
# importing bort_jax.data stays light.
if TYPE_CHECKING:
  import grain

__all__ = [
    'Batch',
    'epoch_permutation',
    'eval_dataset',
    'iterator_position',
    'make_eval_iterator',
    'make_iterator',
    'make_train_iterator',
    'steps_per_epoch',
    'train_dataset',
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
    >>> from bort_jax.data import epoch_permutation
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
    >>> from bort_jax.data import steps_per_epoch
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


def _batch(
    spec: DatasetSpec, images: np.ndarray, labels: np.ndarray, mask: np.ndarray
) -> Batch:
  """Normalised float32 images, int32 labels and the bool mask."""
  return {
      'image': transforms.normalize(images, spec.mean, spec.std),
      'label': labels.astype(np.int32),
      'mask': mask,
  }


class _TrainBatch:
  """Global step -> this process' rows of that step's augmented batch.

  A plain class rather than a closure so that Grain's worker processes can
  unpickle it; the permutation of the last epoch seen is kept.
  """

  def __init__(self, source, *, batch_size, seed, steps, rows, augment):
    self.source = source
    self.batch_size = batch_size
    self.seed = seed
    self.steps = steps
    self.rows = rows
    self.transform = (
        source.spec.train_transform if augment else source.spec.eval_transform
    )
    self._order = (-1, None)

  def __getstate__(self) -> dict[str, Any]:
    return {**self.__dict__, '_order': (-1, None)}

  def order(self, epoch: int) -> np.ndarray:
    cached_epoch, order = self._order
    if cached_epoch != epoch:
      order = epoch_permutation(len(self.source), self.seed, epoch)
      self._order = (epoch, order)
    return order

  def __call__(self, global_step: int) -> Batch:
    epoch, step = divmod(int(global_step), self.steps)
    spec = self.source.spec
    size = self.batch_size
    indices = self.order(epoch)[step * size : (step + 1) * size][self.rows]
    # Drawn for the whole global batch, then sliced: independent of the
    # number of processes.
    rng = np.random.default_rng([self.seed, epoch, _AUGMENT, step])
    u = rng.random((size, spec.num_uniforms))[self.rows]
    examples = self.source.read(indices)
    images = self.transform(examples.images, u, map)
    return _batch(spec, images, examples.labels, np.ones(len(indices), bool))


class _EvalBatch:
  """Eval step -> this process' rows of that padded, masked batch."""

  def __init__(self, source, *, batch_size, rows):
    self.source = source
    self.batch_size = batch_size
    self.rows = rows

  def __call__(self, step: int) -> Batch:
    spec = self.source.spec
    local = self.rows.stop - self.rows.start
    positions = int(step) * self.batch_size + self.rows.start + np.arange(local)
    mask = positions < len(self.source)
    examples = self.source.read(positions[mask])
    real = spec.eval_transform(
        examples.images, np.zeros((int(mask.sum()), 0)), map
    )
    images = np.zeros((local, *spec.image_shape), np.uint8)
    labels = np.zeros((local,), np.int32)
    images[mask], labels[mask] = real, examples.labels
    batch = _batch(spec, images, labels, mask)
    batch['image'][~mask] = 0.0  # Padding is zeros after normalisation.
    return batch


def _rows(batch_size: int, process_index, process_count) -> slice:
  index, count = _processes(process_index, process_count)
  local = _local_batch_size(batch_size, count)
  return slice(index * local, (index + 1) * local)


def train_dataset(
    source: Source,
    *,
    batch_size: int,
    seed: int,
    num_epochs: int = 1,
    augment: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.MapDataset:
  """``num_epochs`` shuffled, augmented epochs of this process' batch shards.

  Element ``i`` is global step ``i``: epoch ``i // steps_per_epoch``, batch
  ``i % steps_per_epoch`` of that epoch's :func:`epoch_permutation`, with
  its augmentation drawn from ``(seed, epoch, step)``. Slicing the dataset
  (``ds[start:]``) starts a run mid-way.

  Args:
    source: a source from :func:`bort_jax.data.open_split` (possibly
      ``in_memory=True``).
    batch_size: the global batch size (all processes together).
    seed: the run seed, in ``[0, 2**63)``.
    num_epochs: epochs, one after the other.
    augment: apply the data set's training augmentation (else its eval
      transform, e.g. ImageNet's centre crop).
    process_index: this process (default ``jax.process_index()``).
    process_count: number of processes (default ``jax.process_count()``).

  Returns:
    A ``grain.MapDataset`` of ``num_epochs * steps_per_epoch(len(source),
    batch_size, train=True)`` batches of ``batch_size // process_count``
    examples.

  Raises:
    ValueError: bad batch size, process, seed or epoch count, or fewer
      examples than one batch.

  Example:
    >>> import numpy as np
    >>> from bort_jax import data
    >>> source = data.ArraySource(
    ...     data.dataset_info('mnist'), 'train',
    ...     np.zeros((10, 28, 28, 1), np.uint8), np.arange(10, dtype=np.int32))
    >>> ds = data.train_dataset(source, batch_size=4, seed=0, num_epochs=3,
    ...                         process_index=0, process_count=1)
    >>> len(ds), ds[0]['image'].shape, sorted(ds[0]['label'].tolist())
    (6, (4, 28, 28, 1), [2, 4, 6, 7])
  """
  _check_non_negative(seed=seed)
  if num_epochs < 1:
    raise ValueError(f'num_epochs must be positive, got {num_epochs}')
  rows = _rows(batch_size, process_index, process_count)
  steps = steps_per_epoch(len(source), batch_size, train=True)
  if steps == 0:
    raise ValueError(
        f'{source.spec.name} {getattr(source, "split", "")!r} has '
        f'{len(source)} examples, fewer than one batch of {batch_size}'
    )
  read = _TrainBatch(
      source,
      batch_size=batch_size,
      seed=seed,
      steps=steps,
      rows=rows,
      augment=augment,
  )
  import grain  # pylint: disable=import-outside-toplevel

  return grain.MapDataset.range(num_epochs * steps).map(read)


def eval_dataset(
    source: Source,
    *,
    batch_size: int,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.MapDataset:
  """One pass over a split, every example exactly once, padded and masked.

  Args:
    source: a source from :func:`bort_jax.data.open_split`.
    batch_size: the global batch size (all processes together).
    process_index: this process (default ``jax.process_index()``).
    process_count: number of processes (default ``jax.process_count()``).

  Returns:
    A ``grain.MapDataset`` of ``steps_per_epoch(len(source), batch_size,
    train=False)`` batches of ``batch_size // process_count`` examples;
    ``mask`` is False on the padding of the last one. Sum ``mask`` to count
    examples.

  Example:
    >>> import numpy as np
    >>> from bort_jax import data
    >>> source = data.ArraySource(
    ...     data.dataset_info('mnist'), 'train',
    ...     np.zeros((10, 28, 28, 1), np.uint8), np.arange(10, dtype=np.int32))
    >>> ds = data.eval_dataset(source, batch_size=4, process_index=1,
    ...                        process_count=2)
    >>> [batch['label'].tolist() for batch in ds]
    [[2, 3], [6, 7], [0, 0]]
    >>> [int(batch['mask'].sum()) for batch in ds]
    [2, 2, 0]
  """
  rows = _rows(batch_size, process_index, process_count)
  steps = steps_per_epoch(len(source), batch_size, train=False)
  read = _EvalBatch(source, batch_size=batch_size, rows=rows)
  import grain  # pylint: disable=import-outside-toplevel

  return grain.MapDataset.range(steps).map(read)


def _absl_flags_parsed() -> None:
  """Grain's worker processes read absl flags; a program that parses its
  command line with argparse (or a notebook) never parses them."""
  from absl import flags  # pylint: disable=import-outside-toplevel

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _exit_with_parent(worker_index: int, worker_count: int) -> None:
  """Grain ``worker_init_fn``: end this worker process when its parent dies.

  Grain's worker processes wait for their parent's requests as long as
  they live and never check that the parent does: after a ``kill -9`` of
  the trainer they would live on as orphans, idle but holding its stdout
  and stderr open (a caller reading those to EOF hangs) and its data in
  memory. A daemon thread waits on multiprocessing's parent sentinel, a
  pipe whose write end only the parent process holds, at EOF once that
  process is gone, however it died; then the worker exits at once, as
  there is no one left to deliver to. Portable: no signal, no ``prctl``.

  Not Linux's ``PR_SET_PDEATHSIG``: it fires when the *thread* that
  started the worker exits, and Grain starts its workers from its own
  prefetch threads, not the main thread.
  """
  del worker_index, worker_count
  parent = multiprocessing.parent_process()
  if parent is None:  # called outside a multiprocessing child
    return

  def exit_when_parent_gone() -> None:
    parent.join()  # returns at once if the parent is already gone
    os._exit(1)  # pylint: disable=protected-access

  threading.Thread(
      target=exit_when_parent_gone, name='bort-exit-with-parent', daemon=True
  ).start()


def make_iterator(
    dataset: grain.MapDataset,
    *,
    num_workers: int = 0,
    num_threads: int = 0,
    prefetch: int = 2,
) -> grain.DatasetIterator:
  """A ``grain.DatasetIterator`` over ``dataset``, with its prefetching.

  Args:
    dataset: from :func:`train_dataset` or :func:`eval_dataset` (or a slice).
    num_workers: worker processes (Grain's ``mp_prefetch``); each reads and
      transforms every ``num_workers``-th batch. 0 reads in this process.
      Workers pay off where decoding is the bottleneck (ImageNet JPEGs).
      They exit when this process dies, even by ``kill -9``.
    num_threads: threads reading batches in each process; 0 reads inline
      (best for in-memory data such as MNIST).
    prefetch: batches read ahead in each process.

  Returns:
    An iterator of the dataset's batches, in order, for any worker or thread
    count. ``get_state()`` is JSON-ready; ``set_state(state)`` on an
    iterator of the same dataset, worker count included, resumes at the
    next batch. Call ``close()`` when done with one that has workers.

  Example:
    >>> import numpy as np
    >>> from bort_jax import data
    >>> source = data.ArraySource(
    ...     data.dataset_info('mnist'), 'train',
    ...     np.zeros((10, 28, 28, 1), np.uint8), np.arange(10, dtype=np.int32))
    >>> ds = data.train_dataset(source, batch_size=4, seed=0, num_epochs=3,
    ...                         process_index=0, process_count=1)
    >>> it = data.make_iterator(ds)
    >>> first = next(it)
    >>> state = it.get_state()
    >>> second = next(it)
    >>> resumed = data.make_iterator(ds)
    >>> resumed.set_state(state)
    >>> bool((next(resumed)['label'] == second['label']).all())
    True
  """
  _check_non_negative(
      num_workers=num_workers, num_threads=num_threads, prefetch=prefetch
  )
  import grain  # pylint: disable=import-outside-toplevel

  options = grain.ReadOptions(
      num_threads=num_threads,
      prefetch_buffer_size=max(prefetch, num_threads),
  )
  iterable = dataset.to_iter_dataset(options)
  if num_workers:
    _absl_flags_parsed()
    iterable = iterable.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=num_workers),
        worker_init_fn=_exit_with_parent,
    )
  return iter(iterable)


def iterator_position(state: Any) -> int | None:
  """How many batches an iterator of :func:`make_iterator` has yielded,
  read from its ``get_state()``; ``None`` for a state of another layout.

  Example:
    >>> from bort_jax.data import iterator_position
    >>> iterator_position({'next_index': 7})
    7
  """
  if not isinstance(state, dict):
    return None
  if set(state) == {'next_index'} and isinstance(state['next_index'], int):
    return state['next_index']
  workers = state.get('iterators_in_use_states')
  if isinstance(workers, list) and all(
      isinstance(worker, dict) and isinstance(worker.get('next_index'), int)
      for worker in workers
  ):
    return sum(worker['next_index'] for worker in workers)
  return None


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
    num_workers: int = 0,
    num_threads: int = 0,
) -> grain.DatasetIterator:
  """One shuffled, augmented training epoch of this process' batch shards.

  :func:`train_dataset` for epoch ``epoch`` from ``start_step``, through
  :func:`make_iterator`.

  Args:
    dataset: a data set name (its ``'train'`` split is opened) or a source
      from :func:`bort_jax.data.open_split` (reuse one across epochs,
      possibly ``in_memory=True``).
    batch_size: the global batch size (all processes together).
    seed: non-negative run seed.
    epoch: epoch number; with ``seed`` it fixes the order and augmentation.
    start_step: first step of the epoch to yield.
    augment: apply the data set's training augmentation.
    data_dir: tfds data dir when ``dataset`` is a name.
    download: prepare the data set if missing (needs internet).
    process_index: this process (default ``jax.process_index()``).
    process_count: number of processes (default ``jax.process_count()``).
    num_workers: Grain worker processes (see :func:`make_iterator`).
    num_threads: reading threads (see :func:`make_iterator`).

  Returns:
    An iterator of ``steps_per_epoch(len(source), batch_size, train=True) -
    start_step`` batches of ``batch_size // process_count`` examples.

  Raises:
    DatasetNotFoundError: not prepared and ``download`` is False (raised by
      this call, not by the first ``next``).
    ValueError: bad batch size, process or seed.

  Example:
    >>> import numpy as np
    >>> from bort_jax import data
    >>> source = data.ArraySource(
    ...     data.dataset_info('mnist'), 'train',
    ...     np.zeros((10, 28, 28, 1), np.uint8), np.arange(10, dtype=np.int32))
    >>> batches = list(data.make_train_iterator(
    ...     source, batch_size=4, seed=0, epoch=1, process_index=0,
    ...     process_count=1))
    >>> len(batches), batches[0]['image'].dtype, batches[0]['label'].dtype
    (2, dtype('float32'), dtype('int32'))
  """
  _check_non_negative(epoch=epoch, start_step=start_step)
  source = _resolve_source(dataset, 'train', data_dir, download)
  ds = train_dataset(
      source,
      batch_size=batch_size,
      seed=seed,
      num_epochs=epoch + 1,
      augment=augment,
      process_index=process_index,
      process_count=process_count,
  )
  steps = len(ds) // (epoch + 1)
  return make_iterator(
      ds[epoch * steps + start_step :],
      num_workers=num_workers,
      num_threads=num_threads,
  )


def make_eval_iterator(
    dataset: str | Source,
    *,
    batch_size: int,
    split: str = 'eval',
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    process_index: int | None = None,
    process_count: int | None = None,
    num_workers: int = 0,
    num_threads: int = 0,
) -> grain.DatasetIterator:
  """One pass over a split, every example exactly once, padded and masked.

  :func:`eval_dataset` through :func:`make_iterator`.

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
    num_workers: Grain worker processes (see :func:`make_iterator`).
    num_threads: reading threads (see :func:`make_iterator`).

  Returns:
    An iterator of ``steps_per_epoch(len(source), batch_size, train=False)``
    batches of ``batch_size // process_count`` examples; ``mask`` is False on
    the padding of the last one.

  Raises:
    DatasetNotFoundError: not prepared and ``download`` is False.
    ValueError: bad batch size or process.

  Example:
    >>> import numpy as np
    >>> from bort_jax import data
    >>> source = data.ArraySource(
    ...     data.dataset_info('mnist'), 'train',
    ...     np.zeros((10, 28, 28, 1), np.uint8), np.arange(10, dtype=np.int32))
    >>> it = data.make_eval_iterator(source, batch_size=4, process_index=0,
    ...                              process_count=1)
    >>> sum(int(batch['mask'].sum()) for batch in it)
    10
  """
  source = _resolve_source(dataset, split, data_dir, download)
  return make_iterator(
      eval_dataset(
          source,
          batch_size=batch_size,
          process_index=process_index,
          process_count=process_count,
      ),
      num_workers=num_workers,
      num_threads=num_threads,
  )
