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
  value, docs: shared bort.md section 4).

Baseline: ``--optimizer adamw``.
"""

from bort_jax.training.config import TrainConfig


def get_config() -> TrainConfig:
  """The config of this module's docstring."""
  return TrainConfig(
      name='imagenet_deit_s',
      dataset='imagenet2012',
      model='deit_s',
      optimizer='bort_adamw',
      epochs=300,
      batch_size=1024,
      eval_batch_size=512,
      learning_rate=5e-4,
      lr_reference_batch_size=512,
      schedule='cosine',
      warmup_epochs=5,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      weight_decay=0.05,
      label_smoothing=0.1,
      gamma=1e-4,
      amplitude='adaptive',
      dtype='bfloat16',
      in_memory=False,
      data_threads=16,
      log_every_steps=500,
      checkpoint_every_steps=5000,
  )
