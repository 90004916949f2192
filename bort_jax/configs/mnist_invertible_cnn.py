"""MNIST, the Bort-invertible CNN (square/overcomplete layers), BortA.

Model ``bort_invertible_cnn`` (:class:`bort_jax.models.BortInvertibleCNN`):
every convolution has at least as many units as inputs per patch (3x3
1 -> 16, then space-to-depth 2x2 stride-2 layers 16 -> 64 and 64 -> 256
with a 1x1 64 -> 64 between them), LeakyReLU 0.5. Why: Bort drives the
singular values of each layer's patch matrix to one value; only when the
layer is square or overcomplete does that make the transposed weights a
left inverse (``docs/method.md`` §5). In :class:`InvertibleCNN` (config
``mnist_cnn``) three of four layers are wide, and Wᵀ can only project.

Recipe: that of ``mnist_cnn`` (the AdamW family) so that the two CNNs are
compared on equal terms: 2 epochs, batch 64, AdamW learning rate 2e-3 with a
cosine schedule to 0, weight decay 1e-4 on the kernels, amplitude 1, Bort
gamma 2 (about the authors' per-step retraction, see ``mnist_cnn``).

The classifier is left out of the Bort term (``bort_exclude``, the pattern
:data:`bort_jax.models.BORT_INVERTIBLE_CNN_CLASSIFIER_PATTERN`): it maps
12544 inputs to 10 class templates, which are not a code to invert, and an
orthogonality pull on it would only cost accuracy. Weight decay still
applies to it.

Baseline: ``--optimizer adamw --gamma 0``; both at once:
``bort-train --config mnist_invertible_cnn --compare adamw,bort_adamw
--workdir runs/mnist_invertible_cnn``.
"""

from bort_jax.configs import base
from bort_jax.models import BORT_INVERTIBLE_CNN_CLASSIFIER_PATTERN


def get_config():
  """The config of this module's docstring."""
  config = base.get_config()
  config.name = 'mnist_invertible_cnn'
  config.model = 'bort_invertible_cnn'
  config.optimizer = 'bort_adamw'
  config.epochs = 2
  config.batch_size = 64
  config.learning_rate = 2e-3
  config.weight_decay = 1e-4
  config.gamma = 2.0
  config.bort_exclude = (BORT_INVERTIBLE_CNN_CLASSIFIER_PATTERN,)
  return config
