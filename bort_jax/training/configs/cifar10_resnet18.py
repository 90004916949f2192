"""CIFAR-10, ResNet-18 (CIFAR stem: 3x3 convolution, no max-pool), BortS.

Recipe: 200 epochs, batch 128, SGD momentum 0.9 (Nesterov), learning rate
0.1 with a cosine schedule, weight decay 5e-4 on the kernels, Bort gamma 0.05
(the authors' MNIST/CIFAR-10 BortS value), amplitude 1. Augmentation: 4-pixel
zero padding, random 32x32 crop, random horizontal flip. Baseline:
``--optimizer sgd``.
"""

from bort_jax.training.config import TrainConfig


def get_config() -> TrainConfig:
  """The config of this module's docstring."""
  return TrainConfig(
      name='cifar10_resnet18',
      dataset='cifar10',
      model='resnet18',
      optimizer='bort_sgd',
      epochs=200,
      batch_size=128,
      eval_batch_size=1000,
      learning_rate=0.1,
      schedule='cosine',
      momentum=0.9,
      nesterov=True,
      weight_decay=5e-4,
      gamma=0.05,
      amplitude=1.0,
  )
