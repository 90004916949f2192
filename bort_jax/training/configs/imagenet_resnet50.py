"""ImageNet, ResNet-50, BortS (SGD family): the standard 90-epoch recipe.

Recipe (torchvision's reference ResNet-50 training, which the paper's SGD
baseline of 76.57% top-1 matches):

* 90 epochs, batch 256, SGD momentum 0.9;
* learning rate 0.1 per 256 images (scaled linearly with the batch size),
  divided by 10 at epochs 30, 60 and 80 (``--set schedule=cosine`` for the
  cosine variant, e.g. with ``--set warmup_epochs=5`` for large batches);
* weight decay 1e-4 on the convolution and dense kernels (torchvision also
  decays BatchNorm parameters and biases; here decay and Bort act on the same
  leaves, see :mod:`bort_jax.training.optimizers`);
* Inception-style random-resized crop to 224 and horizontal flip; evaluation
  resizes the shorter side to 256 and centre-crops 224;
* no label smoothing; bfloat16 compute, float32 parameters;
* Bort: gamma 1e-4 with the adaptive amplitude, the value the authors'
  published ImageNet scripts use (docs: shared bort.md section 4; the ICLR
  paper's own values are not known).

Baseline: ``--optimizer sgd``; AdamW and LAMB variants: ``--optimizer
bort_adamw`` / ``bort_lamb`` (with their own learning rate and decay).
"""

from bort_jax.training.config import TrainConfig


def get_config() -> TrainConfig:
  """The config of this module's docstring."""
  return TrainConfig(
      name='imagenet_resnet50',
      dataset='imagenet2012',
      model='resnet50',
      optimizer='bort_sgd',
      epochs=90,
      batch_size=256,
      eval_batch_size=512,
      learning_rate=0.1,
      lr_reference_batch_size=256,
      schedule='step',
      lr_decay_epochs=(30, 60, 80),
      lr_decay_factor=0.1,
      momentum=0.9,
      weight_decay=1e-4,
      gamma=1e-4,
      amplitude='adaptive',
      dtype='bfloat16',
      in_memory=False,
      data_threads=16,
      log_every_steps=500,
      checkpoint_every_steps=5000,
  )
