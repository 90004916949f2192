"""ImageNet, DeiT-S/16, BortA (AdamW family): the DeiT recipe.

Recipe (Touvron et al., 2021, "Training data-efficient image transformers"):

* 300 epochs, batch 1024, AdamW (betas 0.9, 0.999, eps 1e-8);
* learning rate 5e-4 per 512 images (scaled linearly: 1e-3 at batch 1024),
  5 warmup epochs, then cosine decay;
* weight decay 0.05 on the kernels (not on biases, norms, position
  embeddings or the class token);
* label smoothing 0.1; stochastic depth 0.1 (the model's default);
* random-resized crop to 224 and horizontal flip; bfloat16 compute.
  DeiT's RandAugment, Mixup/CutMix, random erasing and repeated augmentation
  are not implemented by the data package; expect a lower top-1 than the
  paper's 79.8% baseline without them;
* Bort: gamma 1e-4 with the adaptive amplitude (the authors' ImageNet BortA
  value, ``docs/method.md``;
  :func:`bort_jax.configs.base.get_imagenet_config`).

Baseline: ``--optimizer adamw``.
"""

from bort_jax.configs import base


def get_config():
  """The config of this module's docstring."""
  config = base.get_imagenet_config()
  config.name = 'imagenet_deit_s'
  config.model = 'deit_s'
  config.optimizer = 'bort_adamw'
  config.epochs = 300
  config.batch_size = 1024
  config.learning_rate = 5e-4
  config.lr_reference_batch_size = 512
  config.warmup_epochs = 5.0
  config.weight_decay = 0.05
  config.label_smoothing = 0.1
  return config
