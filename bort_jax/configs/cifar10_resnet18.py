"""CIFAR-10, ResNet-18 (CIFAR stem: 3x3 convolution, no max-pool), BortS.

Recipe: 200 epochs, batch 128, SGD momentum 0.9 (Nesterov), learning rate
0.1 with a cosine schedule, weight decay 5e-4 on the kernels, Bort gamma 0.05
(the authors' MNIST/CIFAR-10 BortS value), amplitude 1. Augmentation: 4-pixel
zero padding, random 32x32 crop, random horizontal flip. Baseline:
``--optimizer sgd``.
"""

from bort_jax.configs import base


def get_config():
  """The config of this module's docstring."""
  config = base.get_config()
  config.name = 'cifar10_resnet18'
  config.dataset = 'cifar10'
  config.model = 'resnet18'
  config.optimizer = 'bort_sgd'
  config.epochs = 200
  config.learning_rate = 0.1
  config.nesterov = True
  config.weight_decay = 5e-4
  config.gamma = 0.05
  return config
