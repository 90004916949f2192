"""Input pipelines for MNIST, CIFAR-10 and ImageNet: Grain over tfds data sources.

No TensorFlow and no ``tf.data``: tfds ``array_record`` data sources give
random access, Grain (``grain.MapDataset``) orders, shards and prefetches
(optionally in worker processes), numpy and pillow do the rest. Offline first: a data set that
is not prepared in ``data_dir`` fails at once with a message saying how to
provide it (MNIST: ``bort-prepare-mnist``, or
:func:`bort_jax.data.mnist_idx.prepare_mnist`, which builds it from the four
IDX files). Importing the package does not import tensorflow-datasets: the
functions that read or build a data set import it on first use.

Example:
  >>> from bort_jax import data
  >>> data.dataset_info('mnist').image_shape
  (28, 28, 1)
  >>> train = data.open_split('mnist', 'train', data_dir='/tmp/tfds',
  ...                         in_memory=True)  # doctest: +SKIP
  >>> for epoch in range(2):  # doctest: +SKIP
  ...   for batch in data.make_train_iterator(train, batch_size=128, seed=0,
  ...                                         epoch=epoch):
  ...     ...  # batch['image'] float32 [128, 28, 28, 1], 'label', 'mask'
"""

from bort_jax._extras import extra_imports

with extra_imports('bort_jax.data', 'train'):
  from bort_jax.data.pipeline import Batch
  from bort_jax.data.pipeline import epoch_permutation
  from bort_jax.data.pipeline import eval_dataset
  from bort_jax.data.pipeline import iterator_position
  from bort_jax.data.pipeline import make_eval_iterator
  from bort_jax.data.pipeline import make_iterator
  from bort_jax.data.pipeline import make_train_iterator
  from bort_jax.data.pipeline import steps_per_epoch
  from bort_jax.data.pipeline import train_dataset
  from bort_jax.data.sources import ArraySource
  from bort_jax.data.sources import DatasetDownloadError
  from bort_jax.data.sources import DatasetNotFoundError
  from bort_jax.data.sources import Examples
  from bort_jax.data.sources import Source
  from bort_jax.data.sources import TfdsSource
  from bort_jax.data.sources import load_into_memory
  from bort_jax.data.sources import num_examples
  from bort_jax.data.sources import open_split
  from bort_jax.data.sources import prepare_builder
  from bort_jax.data.sources import resolve_data_dir
  from bort_jax.data.specs import DATASETS
  from bort_jax.data.specs import DatasetSpec
  from bort_jax.data.specs import dataset_info

__all__ = [
    'DATASETS',
    'ArraySource',
    'Batch',
    'DatasetDownloadError',
    'DatasetNotFoundError',
    'DatasetSpec',
    'Examples',
    'Source',
    'TfdsSource',
    'dataset_info',
    'epoch_permutation',
    'eval_dataset',
    'iterator_position',
    'load_into_memory',
    'make_eval_iterator',
    'make_iterator',
    'make_train_iterator',
    'num_examples',
    'open_split',
    'prepare_builder',
    'resolve_data_dir',
    'steps_per_epoch',
    'train_dataset',
]
