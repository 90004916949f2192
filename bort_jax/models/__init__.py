"""Flax NNX models for the Bort experiments.

Invertible models (an ordered sequence of named layers, see
:class:`~bort_jax.models.layers.NamedSequential`): :class:`MLP`,
:class:`InvertibleCNN`, :class:`BortInvertibleCNN` (every layer square or
overcomplete, so that the transposed weights invert it under Bort),
:class:`VGG16` (and :class:`InvertibleVGG16`).
Other models: :class:`ResNet18`, :class:`ResNet50` (BatchNorm),
:class:`VisionTransformer` (DeiT-S by default). Build any of them by name with
:func:`create_model`; the catalogue (:mod:`~bort_jax.models.registry`) also
says what each needs from the data, and :func:`register_model` adds a model
of one's own. :func:`exclusion_patterns` turns layer names (a config's
``bort_exclude``) into the kernel paths left out of the Bort term.
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
  from bort_jax.models.layer_paths import (
      exclusion_patterns,
      layer_paths,
      looks_like_layer_name,
  )
  from bort_jax.models.registry import (
      MODEL_CATALOGUE,
      MODEL_NAMES,
      ModelEntry,
      channels_input,
      create_model,
      flat_input,
      image_input,
      input_kwargs,
      model_builder,
      model_entry,
      register_model,
      registered_model_names,
      unregister_model,
  )
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
  )

__all__ = [
    'BORT_INVERTIBLE_CNN_CLASSIFIER_PATTERN',
    'MLP',
    'MODEL_CATALOGUE',
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
    'ModelEntry',
    'NamedSequential',
    'PatchEmbedding',
    'ReLU',
    'ResNet',
    'ResNet18',
    'ResNet50',
    'VisionTransformer',
    'channels_input',
    'create_model',
    'deit_small',
    'exclusion_patterns',
    'flat_input',
    'image_input',
    'input_kwargs',
    'layer_paths',
    'looks_like_layer_name',
    'model_builder',
    'model_entry',
    'register_model',
    'registered_model_names',
    'unregister_model',
]
