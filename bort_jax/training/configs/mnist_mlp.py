"""MNIST, MLP 784-256-10 (ReLU), BortS (SGD family).

Recipe: 10 epochs, batch 128, SGD momentum 0.9, learning rate 0.05 with a
cosine schedule, weight decay 5e-4 on the kernels, Bort gamma 0.05 (the
authors' MNIST/CIFAR-10 BortS value, see docs: shared bort.md section 4),
amplitude 1, no augmentation. Baseline: ``--optimizer sgd``.
"""

from bort_jax.training.config import TrainConfig


def get_config() -> TrainConfig:
  """The config of this module's docstring."""
  return TrainConfig(
      name='mnist_mlp',
      dataset='mnist',
      model='mlp',
      optimizer='bort_sgd',
      epochs=10,
      batch_size=128,
      eval_batch_size=1000,
      learning_rate=0.05,
      schedule='cosine',
      momentum=0.9,
      weight_decay=5e-4,
      gamma=0.05,
      amplitude=1.0,
  )
