"""CIFAR-10 and ImageNet pipelines on ``tfds.testing.mock_data`` examples.

No CIFAR-10 or ImageNet pixels exist on these machines. ``mock_data`` does
cover ``tfds.data_source``: it patches ``DatasetBuilder.as_data_source`` to
serve random examples with the real features (CIFAR-10: 32x32x3; ImageNet:
random sizes, here 5-50 px a side), ``download_and_prepare`` to a no-op and
the builder's ``data_dir`` to a mock folder. Two details shape these tests:

* it does not patch ``DatasetBuilder.is_prepared``, so an offline
  (``download=False``) open would report the data set as missing; the tests
  pass ``download=True``, which inside ``mock_data`` downloads nothing and
  exercises the online path's code (its check that the download host can be
  reached is stubbed);
* in tfds 4.9.10 the mocked source's ``__getitems__`` is not bound to its
  instance (a ``TypeError``) while ``__getitem__`` works; the pipeline only
  uses ``__getitems__`` on real ``array_record`` readers and reads other
  sources example by example.
"""

import functools

import numpy as np
import pytest
import tensorflow_datasets as tfds

import testing

from bort_jax import data
from bort_jax.data import sources

NUM_EXAMPLES = 20
CASES = {
    'cifar10': ((32, 32, 3), 10),
    'imagenet2012': ((224, 224, 3), 1000),
    'mnist': ((28, 28, 1), 10),
}


@pytest.fixture
def mocked(monkeypatch):
  # mock_data serves examples without a network; the check that a real
  # download's host can be reached would fail here, so it is stubbed.
  monkeypatch.setattr(sources, '_check_reachable', lambda spec, data_dir: None)
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    yield


def open_mock(name, split='train'):
  return data.open_split(
      name, split, data_dir='/nonexistent/tfds', download=True
  )


train_batches = functools.partial(testing.train_batches, batch_size=8)
eval_batches = functools.partial(testing.eval_batches, batch_size=8)


def denormalize(name, images):
  info = data.dataset_info(name)
  return images * np.asarray(info.std, np.float32) + np.asarray(
      info.mean, np.float32
  )


@pytest.mark.parametrize('name', sorted(CASES))
def test_mock_batches_shapes_and_dtypes(mocked, name):
  shape, num_classes = CASES[name]
  source = open_mock(name)
  assert len(source) == NUM_EXAMPLES
  for batch in train_batches(source) + eval_batches(open_mock(name, 'eval')):
    assert (
        batch['image'].shape == (8, *shape)
        and batch['image'].dtype == np.float32
    )
    assert batch['label'].dtype == np.int32 and batch['mask'].dtype == bool
    assert ((0 <= batch['label']) & (batch['label'] < num_classes)).all()
    assert np.isfinite(batch['image']).all()


@pytest.mark.parametrize('name', sorted(CASES))
def test_mock_normalisation(mocked, name):
  """Mock pixels are uniform in 0..254: de-normalised they lie in [0, 1], mean ~0.5."""
  batches = train_batches(open_mock(name), batch_size=16) + eval_batches(
      open_mock(name, 'eval')
  )
  for batch in batches:
    pixels = denormalize(name, batch['image'][batch['mask']])
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
  eval_pixels = np.concatenate(
      [denormalize(name, b['image'][b['mask']]) for b in batches[1:]]
  )
  assert eval_pixels.mean() == pytest.approx(127 / 255, abs=0.03)


def test_mock_eval_counts_and_padding(mocked):
  batches = eval_batches(open_mock('cifar10', 'eval'), batch_size=8)
  assert len(batches) == 3
  assert sum(int(b['mask'].sum()) for b in batches) == NUM_EXAMPLES
  assert not batches[-1]['image'][~batches[-1]['mask']].any()


@pytest.mark.parametrize('name', ['cifar10', 'imagenet2012'])
def test_mock_augmentation_is_deterministic_and_sharded(mocked, name):
  source = open_mock(name)
  single = train_batches(source, seed=5)
  assert len(single) == NUM_EXAMPLES // 8
  again = train_batches(source, seed=5)
  other = train_batches(source, seed=6)
  np.testing.assert_array_equal(single[0]['image'], again[0]['image'])
  assert not np.array_equal(single[0]['image'], other[0]['image'])
  shards = [
      train_batches(source, seed=5, process_index=p, process_count=2)
      for p in range(2)
  ]
  for step, batch in enumerate(single):
    for key in batch:
      np.testing.assert_array_equal(
          np.concatenate([shards[0][step][key], shards[1][step][key]]),
          batch[key],
      )


def test_mock_cifar_augmentation_changes_images(mocked):
  """Train (pad, crop, flip) and eval (identity) views of the same examples differ."""
  source = open_mock('cifar10')
  order = data.epoch_permutation(len(source), seed=0, epoch=0)[:8]
  augmented = train_batches(source)[0]['image']
  plain = data.make_eval_iterator(
      source, batch_size=NUM_EXAMPLES, process_index=0, process_count=1
  )
  plain = next(plain)['image'][order]
  np.testing.assert_array_equal(
      train_batches(source, augment=False)[0]['image'], plain
  )
  assert not np.array_equal(augmented, plain)
  # Each augmented image is a shifted (and maybe mirrored) crop of its original.
  zero = -np.asarray(data.dataset_info('cifar10').mean) / np.asarray(
      data.dataset_info('cifar10').std
  )
  for aug, orig in zip(augmented, plain):
    padded = np.broadcast_to(zero, (40, 40, 3)).astype(np.float32).copy()
    padded[4:36, 4:36] = orig
    candidates = [
        padded[y : y + 32, x : x + 32] for y in range(9) for x in range(9)
    ]
    assert any(
        np.allclose(aug, c) or np.allclose(aug, c[:, ::-1]) for c in candidates
    )


def test_mock_imagenet_threads_match_inline(mocked):
  source = open_mock('imagenet2012')
  inline = train_batches(source, seed=1)[0]
  threaded = train_batches(source, seed=1, num_threads=2)[0]
  np.testing.assert_array_equal(inline['image'], threaded['image'])
  eval_inline = eval_batches(source)[0]
  eval_threaded = eval_batches(source, num_threads=2)[0]
  np.testing.assert_array_equal(eval_inline['image'], eval_threaded['image'])


def test_mock_data_patches_tfds_data_source(mocked):
  ds = tfds.data_source('cifar10', split='train', data_dir='/nonexistent/tfds')
  assert len(ds) == NUM_EXAMPLES
  example = ds[3]
  assert (
      example['image'].shape == (32, 32, 3)
      and example['image'].dtype == np.uint8
  )
