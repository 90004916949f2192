"""MNIST, the invertible CNN (LeakyReLU 0.5, strided convolutions), BortA.

Recipe: 2 epochs, batch 64, AdamW learning rate 2e-3 with a cosine schedule
to 0, weight decay 1e-4 on the kernels, no augmentation, amplitude 1,
training loss and accuracy logged every 50 steps (``metrics.jsonl`` and
TensorBoard). Sized
so that the baseline-vs-Bort comparison (the README's main command) takes a
few minutes on two CPU cores; both reach about 98.6-98.7% test accuracy.

Bort gamma 2: BortA moves the kernels by ``lr * gamma * Delta`` per step. The
authors' MNIST value, gamma 0.05, is for BortS at an SGD learning rate of
about 0.1 (a retraction of 5e-3 per step); at AdamW's 2e-3, gamma 2 gives a
similar 4e-3. In 2 epochs it brings the kernels' orthogonality error
(``relative_error/mean``) from about 1.8 (AdamW) to 0.2, and their mean
``|cos|`` from 0.11 to 0.06, for about 0.15 points of test accuracy.

Baseline: ``--optimizer adamw``; both at once:
``bort-train --config mnist_cnn --compare adamw,bort_adamw --workdir runs/mnist_cnn``.
"""

from bort_jax.configs import base


def get_config():
  """The config of this module's docstring."""
  config = base.get_config()
  config.name = 'mnist_cnn'
  config.model = 'invertible_cnn'
  config.optimizer = 'bort_adamw'
  config.epochs = 2
  config.batch_size = 64
  config.learning_rate = 2e-3
  config.weight_decay = 1e-4
  config.gamma = 2.0
  config.log_every_steps = 50
  return config
