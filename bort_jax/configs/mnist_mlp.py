"""MNIST, MLP 784-256-10 (ReLU), BortS (SGD family).

Recipe: 10 epochs, batch 128, SGD momentum 0.9, learning rate 0.05 with a
cosine schedule, weight decay 5e-4 on the kernels, Bort gamma 0.05 (the
authors' MNIST/CIFAR-10 BortS value, see ``docs/method.md``), amplitude 1,
no augmentation; training loss and accuracy logged every 50 steps
(``metrics.jsonl`` and TensorBoard). Baseline: ``--optimizer sgd``.
"""

from bort_jax.configs import base


def get_config():
  """The config of this module's docstring."""
  config = base.get_config()
  config.name = 'mnist_mlp'
  config.model = 'mlp'
  config.optimizer = 'bort_sgd'
  config.epochs = 10
  config.learning_rate = 0.05
  config.weight_decay = 5e-4
  config.gamma = 0.05
  config.log_every_steps = 50
  return config
