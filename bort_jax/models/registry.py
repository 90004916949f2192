"""The model catalogue: each name, its builder and what it needs from the data.

A :class:`ModelEntry` says how to build a model (``builder(num_classes=...,
rngs=..., **kwargs)``) and which constructor arguments describe its input
(:attr:`ModelEntry.input_kwargs`: the flattened size for the MLP, the image
size and channels for the CNNs, VGGs and ViTs, the channels only for the
ResNets). :func:`create_model` builds an entry by name; the training programs
derive the input arguments from the data set through :func:`input_kwargs`
and check ``model_kwargs`` against :func:`model_builder`'s signature.
:func:`register_model` adds a model of one's own, which a config can then
name.

Example:
  >>> from flax import nnx
  >>> import jax.numpy as jnp
  >>> input_kwargs('mlp', (28, 28, 1))
  {'in_features': 784}
  >>> input_kwargs('resnet18', (32, 32, 3))
  {'in_channels': 3}
  >>> model = create_model('mlp', num_classes=10, rngs=nnx.Rngs(0))
  >>> model(jnp.zeros((2, 28, 28, 1))).shape
  (2, 10)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from flax import nnx

from bort_jax.models.cnn import BortInvertibleCNN, InvertibleCNN
from bort_jax.models.mlp import MLP
from bort_jax.models.resnet import ResNet18, ResNet50
from bort_jax.models.vgg import VGG16, InvertibleVGG16
from bort_jax.models.vit import deit_small

ImageShape = tuple[int, int, int]


def flat_input(image_shape: ImageShape) -> dict[str, Any]:
  """``in_features``: the size of the flattened ``(height, width, channels)``
  image (a fully connected model)."""
  height, width, channels = image_shape
  return {'in_features': height * width * channels}


def image_input(image_shape: ImageShape) -> dict[str, Any]:
  """``image_size`` (the height; images are square) and ``in_channels``: a
  model whose layer sizes depend on the image size."""
  height, _, channels = image_shape
  return {'image_size': height, 'in_channels': channels}


def channels_input(image_shape: ImageShape) -> dict[str, Any]:
  """``in_channels`` only: a model that takes any image size (global
  pooling before its classifier)."""
  return {'in_channels': image_shape[-1]}


@dataclasses.dataclass(frozen=True)
class ModelEntry:
  """One model of the catalogue.

  Attributes:
    builder: ``builder(num_classes=..., rngs=..., **kwargs)`` returns the
      model; its signature is what ``model_kwargs`` are checked against.
    input_kwargs: ``(height, width, channels) -> constructor arguments``
      describing the input; :func:`flat_input`, :func:`image_input` or
      :func:`channels_input` for the packaged models.
  """

  builder: Callable[..., nnx.Module]
  input_kwargs: Callable[[ImageShape], dict[str, Any]]


#: Model name -> :class:`ModelEntry`; :func:`register_model` adds to it.
MODEL_CATALOGUE: dict[str, ModelEntry] = {
    'mlp': ModelEntry(MLP, flat_input),
    'invertible_cnn': ModelEntry(InvertibleCNN, image_input),
    'bort_invertible_cnn': ModelEntry(BortInvertibleCNN, image_input),
    'vgg16': ModelEntry(VGG16, image_input),
    'invertible_vgg16': ModelEntry(InvertibleVGG16, image_input),
    'resnet18': ModelEntry(ResNet18, channels_input),
    'resnet50': ModelEntry(ResNet50, channels_input),
    'deit_s': ModelEntry(deit_small, image_input),
}

#: The names of the packaged models (:func:`registered_model_names` adds
#: those registered since).
MODEL_NAMES: tuple[str, ...] = tuple(MODEL_CATALOGUE)


def registered_model_names() -> tuple[str, ...]:
  """Every name :func:`create_model` accepts now, packaged or registered."""
  return tuple(MODEL_CATALOGUE)


def register_model(
    name: str,
    builder: Callable[..., nnx.Module],
    *,
    input_kwargs: Callable[[ImageShape], dict[str, Any]] = image_input,
    replace: bool = False,
) -> ModelEntry:
  """Adds a model to the catalogue, so that a config's ``model`` can name it.

  Args:
    name: the model's name.
    builder: ``builder(num_classes=..., rngs=..., **kwargs)`` returns the
      model (a class or a function).
    input_kwargs: ``(height, width, channels) -> constructor arguments``
      describing the input (default :func:`image_input`).
    replace: allow replacing an entry of the same name.

  Returns:
    The new :class:`ModelEntry`.

  Raises:
    ValueError: ``name`` is taken and ``replace`` is false.

  Example:
    >>> from bort_jax.models.vit import VisionTransformer
    >>> def tiny_vit(num_classes=10, *, rngs, **kwargs):
    ...   return VisionTransformer(num_classes, rngs=rngs, image_size=8,
    ...                            patch_size=4, embed_dim=16, depth=1,
    ...                            num_heads=2, **kwargs)
    >>> entry = register_model('tiny_vit', tiny_vit)
    >>> 'tiny_vit' in registered_model_names()
    True
    >>> unregister_model('tiny_vit')
  """
  if name in MODEL_CATALOGUE and not replace:
    raise ValueError(
        f'model {name!r} is already registered; pass replace=True to '
        'replace it'
    )
  entry = ModelEntry(builder, input_kwargs)
  MODEL_CATALOGUE[name] = entry
  return entry


def unregister_model(name: str) -> None:
  """Removes a model :func:`register_model` added (or any entry)."""
  model_entry(name)
  del MODEL_CATALOGUE[name]


def model_entry(name: str) -> ModelEntry:
  """The catalogue entry of ``name``.

  Raises:
    ValueError: for an unknown name; the message lists the valid names.
  """
  try:
    return MODEL_CATALOGUE[name]
  except KeyError:
    raise ValueError(
        f'unknown model {name!r}; valid model names: '
        f'{list(registered_model_names())}'
    ) from None


def model_builder(name: str) -> Callable[..., nnx.Module]:
  """The class (or function) :func:`create_model` calls for ``name``."""
  return model_entry(name).builder


def input_kwargs(name: str, image_shape: ImageShape) -> dict[str, Any]:
  """The constructor arguments telling model ``name`` its input's shape.

  Args:
    name: a registered model name.
    image_shape: ``(height, width, channels)`` of the data set's images.
  """
  return model_entry(name).input_kwargs(tuple(image_shape))


def create_model(
    name: str, *, num_classes: int, rngs: nnx.Rngs, **kwargs: Any
) -> nnx.Module:
  """Builds the registered model ``name``.

  Args:
    name: one of :data:`MODEL_NAMES`: ``mlp``, ``invertible_cnn``,
      ``bort_invertible_cnn``, ``vgg16``, ``invertible_vgg16``, ``resnet18``,
      ``resnet50``, ``deit_s``; or a name given to :func:`register_model`.
    num_classes: number of output logits.
    rngs: random number generators for the initialisation.
    **kwargs: further constructor arguments of that model (e.g.
      ``in_channels=3, image_size=32`` for ``invertible_cnn``,
      ``dtype=jnp.bfloat16`` for ``resnet50``).

  Raises:
    ValueError: for an unknown name; the message lists the valid names.

  Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from bort_jax.models import create_model
    >>> model = create_model('invertible_cnn', num_classes=10, channels=(4, 8),
    ...                      rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 28, 28, 1))).shape
    (2, 10)
  """
  return model_builder(name)(num_classes=num_classes, rngs=rngs, **kwargs)
