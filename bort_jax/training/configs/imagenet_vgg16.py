"""ImageNet, VGG-16 (no BatchNorm), BortS (SGD family).

Recipe (torchvision's reference VGG training; Simonyan & Zisserman, 2015):

* 90 epochs, batch 256, SGD momentum 0.9;
* learning rate 0.01 per 256 images, divided by 10 every 30 epochs;
* weight decay 5e-4 on the kernels; dropout 0.5 in the classifier (the
  model's default);
* random-resized crop to 224 and horizontal flip; bfloat16 compute;
* Bort: gamma 1e-4 with the adaptive amplitude (the authors' ImageNet value,
  docs: shared bort.md section 4).

Baseline: ``--optimizer sgd``. The paper's AdamW row: ``--optimizer
bort_adamw --learning-rate 1e-4 --set weight_decay=0.05`` (its AdamW
hyperparameters are not published). The invertible VGG-16 of the
explainability experiments: ``--set model=invertible_vgg16``.
"""

from bort_jax.training.config import TrainConfig


def get_config() -> TrainConfig:
  """The config of this module's docstring."""
  return TrainConfig(
      name='imagenet_vgg16',
      dataset='imagenet2012',
      model='vgg16',
      optimizer='bort_sgd',
      epochs=90,
      batch_size=256,
      eval_batch_size=512,
      learning_rate=0.01,
      lr_reference_batch_size=256,
      schedule='step',
      lr_decay_epochs=(30, 60),
      lr_decay_factor=0.1,
      momentum=0.9,
      weight_decay=5e-4,
      gamma=1e-4,
      amplitude='adaptive',
      dtype='bfloat16',
      in_memory=False,
      data_threads=16,
      log_every_steps=500,
      checkpoint_every_steps=5000,
  )
