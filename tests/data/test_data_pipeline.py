"""bort_jax.data.pipeline: determinism, multi-host sharding, eval padding.

Sharding and eval-coverage tests use a small synthetic in-memory source
whose label is the example's index, so every example can be traced; the rest
runs on the real MNIST.
"""

import functools

import numpy as np
import pytest

import testing

from bort_jax import data
from bort_jax.data import sources

NUM_SYNTHETIC = 1000


@pytest.fixture(scope='module')
def indexed() -> sources.ArraySource:
  """1000 MNIST-shaped examples; example ``i`` has label ``i`` and pixels ``i % 256``."""
  images = np.broadcast_to(
      (np.arange(NUM_SYNTHETIC) % 256).astype(np.uint8)[:, None, None, None],
      (NUM_SYNTHETIC, 28, 28, 1),
  ).copy()
  return sources.ArraySource(
      data.dataset_info('mnist'),
      'train',
      images,
      np.arange(NUM_SYNTHETIC, dtype=np.int32),
  )


train_batches = functools.partial(testing.train_batches, batch_size=96)
eval_batches = functools.partial(testing.eval_batches, batch_size=96)


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys() == {'image', 'label', 'mask'}
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


# ---------------------------------------------------------------- format


def test_train_batch_format(mnist_train):
  batch = next(
      data.make_train_iterator(
          mnist_train, batch_size=128, seed=0, process_index=0, process_count=1
      )
  )
  assert (
      batch['image'].shape == (128, 28, 28, 1)
      and batch['image'].dtype == np.float32
  )
  assert batch['label'].shape == (128,) and batch['label'].dtype == np.int32
  assert (
      batch['mask'].shape == (128,)
      and batch['mask'].dtype == bool
      and batch['mask'].all()
  )
  assert set(batch['label'].tolist()) <= set(range(10))


def test_normalisation_of_mnist(mnist_test):
  """Standardised with MNIST's mean/std: about zero mean, unit variance."""
  images = np.concatenate(
      [b['image'] for b in eval_batches(mnist_test, batch_size=2000)]
  )
  assert images.mean() == pytest.approx(0.0, abs=0.01)
  assert images.std() == pytest.approx(1.0, abs=0.01)
  np.testing.assert_allclose(images.min(), -0.1307 / 0.3081, rtol=1e-5)


def test_disk_and_memory_sources_agree(mnist_data_dir, mnist_test):
  on_disk = data.open_split('mnist', 'eval', data_dir=mnist_data_dir)
  assert isinstance(on_disk, data.TfdsSource) and len(on_disk) == 10000
  kwargs = {'batch_size': 64, 'seed': 3, 'epoch': 1, 'start_step': 40}
  a = train_batches(on_disk, **kwargs)[:3]
  b = train_batches(mnist_test, **kwargs)[:3]
  assert_batches_equal(a, b)


def test_num_examples(mnist_data_dir):
  assert data.num_examples('mnist', 'train', data_dir=mnist_data_dir) == 60000
  assert data.num_examples('mnist', 'eval', data_dir=mnist_data_dir) == 10000
  assert (
      data.num_examples('mnist', 'test[:10%]', data_dir=mnist_data_dir) == 1000
  )


def test_streaming_epoch_reads_the_train_split(mnist_data_dir):
  """The data set's name opens its train split: 468 full batches of 128, read
  from disk (timings belong in benchmarks/, not here)."""
  steps = sum(
      1
      for _ in data.make_train_iterator(
          'mnist',
          batch_size=128,
          seed=0,
          data_dir=mnist_data_dir,
          process_index=0,
          process_count=1,
      )
  )
  assert steps == 60000 // 128


def test_in_memory_epoch_has_every_full_batch(mnist_train):
  assert len(train_batches(mnist_train, batch_size=128)) == 468


# ----------------------------------------------------------- determinism


def test_same_seed_same_batches(mnist_train):
  kwargs = {'batch_size': 128, 'seed': 7, 'epoch': 2}
  a = train_batches(mnist_train, **kwargs)[:3]
  b = train_batches(mnist_train, **kwargs)[:3]
  assert_batches_equal(a, b)


@pytest.mark.parametrize(
    'change', [{'seed': 8}, {'epoch': 3}], ids=['seed', 'epoch']
)
def test_different_seed_or_epoch_differ(mnist_train, change):
  kwargs = {'batch_size': 128, 'seed': 7, 'epoch': 2}
  a = train_batches(mnist_train, **kwargs)[0]
  b = train_batches(mnist_train, **{**kwargs, **change})[0]
  assert not np.array_equal(a['image'], b['image'])


def test_epoch_permutation_is_a_function_of_seed_and_epoch():
  p = data.epoch_permutation(100, seed=1, epoch=2)
  np.testing.assert_array_equal(np.sort(p), np.arange(100))
  np.testing.assert_array_equal(p, data.epoch_permutation(100, seed=1, epoch=2))
  assert not np.array_equal(p, data.epoch_permutation(100, seed=1, epoch=3))
  assert not np.array_equal(p, data.epoch_permutation(100, seed=2, epoch=2))


def test_train_drops_remainder_and_never_repeats(indexed):
  batches = train_batches(indexed, batch_size=96)
  assert (
      len(batches)
      == NUM_SYNTHETIC // 96
      == data.steps_per_epoch(NUM_SYNTHETIC, 96, train=True)
  )
  seen = np.concatenate([b['label'] for b in batches])
  assert len(seen) == len(set(seen.tolist())) == 960


def test_start_step_resumes(indexed):
  full = train_batches(indexed, seed=4)
  assert_batches_equal(train_batches(indexed, seed=4, start_step=6), full[6:])


# --------------------------------------------------------------- sharding


@pytest.mark.parametrize('process_count', [2, 3, 4])
@pytest.mark.parametrize(
    'make', [train_batches, eval_batches], ids=['train', 'eval']
)
def test_process_shards_partition_the_global_batch(
    indexed, make, process_count
):
  single = make(indexed, batch_size=96)
  shards = [
      make(indexed, batch_size=96, process_index=p, process_count=process_count)
      for p in range(process_count)
  ]
  assert all(len(s) == len(single) for s in shards)
  for step, global_batch in enumerate(single):
    parts = [s[step] for s in shards]
    assert all(part['label'].shape == (96 // process_count,) for part in parts)
    for key in global_batch:
      np.testing.assert_array_equal(
          np.concatenate([p[key] for p in parts]), global_batch[key]
      )
    real = [set(p['label'][p['mask']].tolist()) for p in parts]
    assert sum(len(r) for r in real) == len(set().union(*real))  # Disjoint.


def test_default_process_is_jax_process(indexed):
  import jax

  a = list(data.make_train_iterator(indexed, batch_size=96, seed=0))
  assert jax.process_count() == 1
  assert_batches_equal(a, train_batches(indexed))


# ------------------------------------------------------------------- eval


@pytest.mark.parametrize(
    'batch_size, process_count',
    [(96, 1), (96, 4), (1000, 2), (999, 3), (2048, 2), (1, 1)],
)
def test_eval_counts_every_example_once(indexed, batch_size, process_count):
  shards = [
      eval_batches(
          indexed,
          batch_size=batch_size,
          process_index=p,
          process_count=process_count,
      )
      for p in range(process_count)
  ]
  steps = data.steps_per_epoch(NUM_SYNTHETIC, batch_size, train=False)
  assert all(len(s) == steps for s in shards)
  labels = np.concatenate([b['label'][b['mask']] for s in shards for b in s])
  np.testing.assert_array_equal(np.sort(labels), np.arange(NUM_SYNTHETIC))
  for batch in (b for s in shards for b in s):
    assert batch['image'].shape == (batch_size // process_count, 28, 28, 1)
    assert not batch['image'][~batch['mask']].any()  # Padding is zero.
    assert not batch['label'][~batch['mask']].any()


def test_eval_real_mnist_test_split(mnist_data_dir, mnist_test_idx):
  shards = [
      eval_batches(
          'mnist',
          batch_size=384,
          data_dir=mnist_data_dir,
          process_index=p,
          process_count=2,
      )
      for p in range(2)
  ]
  masks = np.concatenate([b['mask'] for s in shards for b in s])
  assert masks.sum() == 10000 and len(masks) == 27 * 384
  labels = np.concatenate([b['label'][b['mask']] for s in shards for b in s])
  np.testing.assert_array_equal(
      np.bincount(labels, minlength=10),
      np.bincount(mnist_test_idx.labels, minlength=10),
  )


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    'kwargs, message',
    [
        ({'batch_size': 96, 'process_count': 5}, 'multiple of process_count'),
        ({'batch_size': 0}, 'positive multiple'),
        ({'process_index': 2, 'process_count': 2}, 'process_index 2'),
        ({'seed': -1}, 'seed must be non-negative'),
        ({'batch_size': 2000}, 'fewer than one batch'),
    ],
)
def test_train_argument_errors(indexed, kwargs, message):
  with pytest.raises(ValueError, match=message):
    train_batches(indexed, **kwargs)


def test_unknown_dataset():
  with pytest.raises(
      ValueError, match="supported: \\['cifar10', 'imagenet2012', 'mnist'\\]"
  ):
    data.dataset_info('fashion_mnist')


@pytest.mark.parametrize(
    'name, shape, classes',
    [
        ('mnist', (28, 28, 1), 10),
        ('cifar10', (32, 32, 3), 10),
        ('imagenet2012', (224, 224, 3), 1000),
    ],
)
def test_dataset_info(name, shape, classes):
  info = data.dataset_info(name)
  assert (info.image_shape, info.num_classes) == (shape, classes)
  assert len(info.mean) == len(info.std) == shape[-1]
  assert (
      info.tfds_split('train') == 'train' and info.tfds_split('test') == 'test'
  )
