"""Build a model by name: ``create_model('resnet18', num_classes=10, rngs=...)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flax import nnx

from bort_jax.models.cnn import BortInvertibleCNN, InvertibleCNN
from bort_jax.models.mlp import MLP
from bort_jax.models.resnet import ResNet18, ResNet50
from bort_jax.models.vgg import VGG16, InvertibleVGG16
from bort_jax.models.vit import deit_small, vit_tiny_test

#: Model name -> constructor taking ``(num_classes, *, rngs, **kwargs)``.
MODEL_BUILDERS: dict[str, Callable[..., nnx.Module]] = {
    'mlp': lambda num_classes, **kw: MLP(num_classes=num_classes, **kw),
    'invertible_cnn': InvertibleCNN,
    'bort_invertible_cnn': BortInvertibleCNN,
    'vgg16': VGG16,
    'invertible_vgg16': InvertibleVGG16,
    'resnet18': ResNet18,
    'resnet50': ResNet50,
    'deit_s': deit_small,
    'vit_tiny_test': vit_tiny_test,
}

#: The names :func:`create_model` accepts.
MODEL_NAMES: tuple[str, ...] = tuple(MODEL_BUILDERS)


def create_model(
    name: str, *, num_classes: int, rngs: nnx.Rngs, **kwargs: Any
) -> nnx.Module:
  """Builds the registered model ``name``.

  Args:
    name: one of :data:`MODEL_NAMES`: ``mlp``, ``invertible_cnn``,
      ``bort_invertible_cnn``, ``vgg16``, ``invertible_vgg16``, ``resnet18``,
      ``resnet50``, ``deit_s``, ``vit_tiny_test``.
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
  try:
    builder = MODEL_BUILDERS[name]
  except KeyError:
    raise ValueError(
        f'unknown model {name!r}; valid model names: {list(MODEL_NAMES)}'
    ) from None
  return builder(num_classes, rngs=rngs, **kwargs)
