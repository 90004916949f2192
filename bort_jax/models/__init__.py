"""Flax NNX models for the Bort experiments.

Invertible models (an ordered sequence of named layers, see
:class:`~bort_jax.models.layers.NamedSequential`): :class:`MLP`,
:class:`InvertibleCNN`, :class:`BortInvertibleCNN` (every layer square or
overcomplete, so that the transposed weights invert it under Bort),
:class:`VGG16` (and :class:`InvertibleVGG16`).
Other models: :class:`ResNet18`, :class:`ResNet50` (BatchNorm),
:class:`VisionTransformer` (DeiT-S by default). Build any of them by name with
:func:`create_model`.
"""

from bort_jax._extras import extra_imports

with extra_imports('bort_jax.models', 'models'):
  from bort_jax.models.cnn import (
      BORT_INVERTIBLE_CNN_CLASSIFIER_PATTERN,
      BortInvertibleCNN,
      InvertibleCNN,
  )
  from bort_jax.models.layers import (
      SEQUENCE_LAYER_TYPES,
      AvgPool,
      Flatten,
      LeakyReLU,
      MaxPool,
      NamedSequential,
      ReLU,
  )
  from bort_jax.models.mlp import MLP
  from bort_jax.models.registry import MODEL_NAMES, create_model
  from bort_jax.models.resnet import (
      BasicBlock,
      BottleneckBlock,
      ResNet,
      ResNet18,
      ResNet50,
  )
  from bort_jax.models.vgg import VGG16, InvertibleVGG16
  from bort_jax.models.vit import (
      EncoderBlock,
      FeedForward,
      PatchEmbedding,
      VisionTransformer,
      deit_small,
      vit_tiny_test,
  )

__all__ = [
    'BORT_INVERTIBLE_CNN_CLASSIFIER_PATTERN',
    'MLP',
    'MODEL_NAMES',
    'SEQUENCE_LAYER_TYPES',
    'VGG16',
    'AvgPool',
    'BasicBlock',
    'BortInvertibleCNN',
    'BottleneckBlock',
    'EncoderBlock',
    'FeedForward',
    'Flatten',
    'InvertibleCNN',
    'InvertibleVGG16',
    'LeakyReLU',
    'MaxPool',
    'NamedSequential',
    'PatchEmbedding',
    'ReLU',
    'ResNet',
    'ResNet18',
    'ResNet50',
    'VisionTransformer',
    'create_model',
    'deit_small',
    'vit_tiny_test',
]
