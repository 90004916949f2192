"""The Grain iterators: the same batches for any number of worker processes
and threads, and a saved state that resumes at the exact next batch."""

import numpy as np
import pytest

from testing import array_source

from bort_jax import data

EPOCHS = 3


@pytest.fixture(scope='module')
def source():
  """50 CIFAR-shaped images (the augmented data set: crops and flips)."""
  return array_source('cifar10', 50)


def _train(source, **kwargs):
  return data.train_dataset(
      source,
      batch_size=8,
      seed=3,
      num_epochs=EPOCHS,
      process_index=0,
      process_count=1,
      **kwargs,
  )


def _drain(iterator, count=None):
  batches = []
  for batch in iterator:
    batches.append({key: np.array(value) for key, value in batch.items()})
    if count is not None and len(batches) == count:
      break
  return batches


def _assert_same_batches(expected, actual):
  assert len(expected) == len(actual)
  for want, got in zip(expected, actual):
    assert want.keys() == got.keys()
    for key in want:
      np.testing.assert_array_equal(want[key], got[key])


@pytest.mark.parametrize('workers, threads', [(0, 0), (0, 2), (2, 0)])
def test_iterator_yields_the_dataset_in_order(source, workers, threads):
  dataset = _train(source)
  iterator = data.make_iterator(
      dataset, num_workers=workers, num_threads=threads
  )
  try:
    got = _drain(iterator)
  finally:
    iterator.close()
  _assert_same_batches([dataset[i] for i in range(len(dataset))], got)
  assert len(got) == EPOCHS * (50 // 8)


def test_epochs_are_shuffled_differently_and_keep_every_example(source):
  dataset = _train(source, augment=False)
  steps = 50 // 8
  epochs = [
      np.concatenate([dataset[e * steps + s]['label'] for s in range(steps)])
      for e in range(EPOCHS)
  ]
  orders = [
      data.epoch_permutation(50, seed=3, epoch=e)[: steps * 8]
      for e in range(EPOCHS)
  ]
  for labels, order in zip(epochs, orders):
    np.testing.assert_array_equal(labels, source.labels[order])
  assert not np.array_equal(orders[0], orders[1])


@pytest.mark.parametrize(
    'workers, stop',
    [(0, 2), (0, 6), (0, 9), (2, 3)],  # mid-epoch, epoch end, later
)
def test_saved_state_resumes_at_the_next_batch(source, workers, stop):
  dataset = _train(source)
  first = data.make_iterator(dataset, num_workers=workers)
  try:
    _drain(first, stop)
    state = first.get_state()
  finally:
    first.close()
  assert data.iterator_position(state) == stop
  resumed = data.make_iterator(dataset, num_workers=workers)
  try:
    resumed.set_state(state)
    rest = _drain(resumed)
  finally:
    resumed.close()
  _assert_same_batches([dataset[i] for i in range(stop, len(dataset))], rest)


@pytest.mark.parametrize(
    'state, position',
    [
        ({'next_index': 4}, 4),
        (
            {'iterators_in_use_states': [{'next_index': 3}, {'next_index': 2}]},
            5,
        ),
        ({'something': 1}, None),
        ([], None),
        (None, None),
    ],
)
def test_iterator_position(state, position):
  assert data.iterator_position(state) == position


def test_process_shards_concatenate_to_the_global_batch(source):
  whole = _train(source)
  shards = [
      data.train_dataset(
          source,
          batch_size=8,
          seed=3,
          num_epochs=EPOCHS,
          process_index=p,
          process_count=2,
      )
      for p in range(2)
  ]
  for step in (0, 7, len(whole) - 1):
    for key in ('image', 'label'):
      np.testing.assert_array_equal(
          whole[step][key],
          np.concatenate([shard[step][key] for shard in shards]),
      )


@pytest.mark.parametrize(
    'kwargs, message',
    [
        ({'num_epochs': 0}, 'num_epochs must be positive'),
        ({'seed': -1}, 'seed must be non-negative'),
        ({'batch_size': 64}, 'fewer than one batch of 64'),
        ({'batch_size': 7, 'process_count': 2}, 'multiple of process_count'),
    ],
)
def test_bad_arguments_are_refused(source, kwargs, message):
  arguments = {
      'batch_size': 8,
      'seed': 0,
      'process_index': 0,
      'process_count': 1,
      **kwargs,
  }
  with pytest.raises(ValueError, match=message):
    data.train_dataset(source, **arguments)


def test_negative_worker_count_is_refused(source):
  with pytest.raises(ValueError, match='num_workers must be non-negative'):
    data.make_iterator(_train(source), num_workers=-1)
