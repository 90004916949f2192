"""ImageNet, VGG-16 (no BatchNorm), BortS (SGD family).

Recipe (torchvision's reference VGG training; Simonyan & Zisserman, 2015):

* 90 epochs, batch 256, SGD momentum 0.9;
* learning rate 0.01 per 256 images, divided by 10 every 30 epochs;
* weight decay 5e-4 on the kernels; dropout 0.5 in the classifier (the
  model's default);
* random-resized crop to 224 and horizontal flip; bfloat16 compute;
* Bort: gamma 1e-4 with the adaptive amplitude (the authors' ImageNet value,
  ``docs/method.md``; :func:`bort_jax.configs.base.get_imagenet_config`).

Baseline: ``--optimizer sgd``. The paper's AdamW row: ``--optimizer
bort_adamw --learning-rate 1e-4 --config.weight_decay=0.05`` (its AdamW
hyperparameters are not published). The invertible VGG-16 of the
explainability experiments: ``--config.model=invertible_vgg16``.
"""

from bort_jax.configs import base


def get_config():
  """The config of this module's docstring."""
  config = base.get_imagenet_config()
  config.name = 'imagenet_vgg16'
  config.model = 'vgg16'
  config.optimizer = 'bort_sgd'
  config.epochs = 90
  config.batch_size = 256
  config.learning_rate = 0.01
  config.lr_reference_batch_size = 256
  config.schedule = 'step'
  config.lr_decay_epochs = (30, 60)
  config.weight_decay = 5e-4
  return config
