"""ImageNet, ResNet-50, BortS (SGD family): the standard 90-epoch recipe.

Recipe (torchvision's reference ResNet-50 training, which the paper's SGD
baseline of 76.57% top-1 matches):

* 90 epochs, batch 256, SGD momentum 0.9;
* learning rate 0.1 per 256 images (scaled linearly with the batch size),
  divided by 10 at epochs 30, 60 and 80 (``--config.schedule=cosine`` for
  the cosine variant, e.g. with ``--config.warmup_epochs=5`` for large
  batches);
* weight decay 1e-4 on the convolution and dense kernels (torchvision also
  decays BatchNorm parameters and biases; here decay and Bort act on the same
  leaves, see :mod:`bort_jax.training.optimizer_factory`);
* Inception-style random-resized crop to 224 and horizontal flip; evaluation
  resizes the shorter side to 256 and centre-crops 224;
* no label smoothing; bfloat16 compute, float32 parameters;
* Bort: gamma 1e-4 with the adaptive amplitude, the value the authors'
  published ImageNet scripts use (``docs/method.md``; the ICLR paper's own
  values are not known). Shared with the other ImageNet recipes:
  :func:`bort_jax.configs.base.get_imagenet_config`.

Baseline: ``--optimizer sgd``; AdamW and LAMB variants: ``--optimizer
bort_adamw`` / ``bort_lamb`` (with their own learning rate and decay).
"""

from bort_jax.configs import base


def get_config():
  """The config of this module's docstring."""
  config = base.get_imagenet_config()
  config.name = 'imagenet_resnet50'
  config.model = 'resnet50'
  config.optimizer = 'bort_sgd'
  config.epochs = 90
  config.batch_size = 256
  config.learning_rate = 0.1
  config.lr_reference_batch_size = 256
  config.schedule = 'step'
  config.lr_decay_epochs = (30, 60, 80)
  config.weight_decay = 1e-4
  return config
