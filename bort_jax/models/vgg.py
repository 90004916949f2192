"""VGG-16 and its invertible variant."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
from flax import nnx

from bort_jax.models.layers import (
    Flatten,
    LeakyReLU,
    MaxPool,
    NamedSequential,
    ReLU,
)

#: Output channels of the 3x3 convolutions, one inner tuple per stage; each
#: stage ends with a 2x downsampling (configuration "D" of Simonyan and
#: Zisserman).
VGG16_STAGES: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)

_PAD_1 = ((1, 1), (1, 1))
_NO_PADDING = ((0, 0), (0, 0))


class VGG16(NamedSequential):
  """VGG-16 classifier, optionally in its invertible form.

  Thirteen 3x3 convolutions (stride 1, padding 1) in five stages, each stage
  ending with a 2x downsampling, then a flatten and the classifier MLP.

  - ``invertible=False`` (the standard network): ReLU activations and 2x2
    max-pooling, layers::

      conv1_1, conv1_1_relu, conv1_2, conv1_2_relu, pool1,
      conv2_1, ..., pool5, flatten,
      fc6, fc6_relu, fc6_dropout, fc7, fc7_relu, fc7_dropout, classifier

  - ``invertible=True``: every ReLU becomes ``LeakyReLU(leaky_relu_slope)``
    (``conv1_1_lrelu``, ..., ``fc6_lrelu``) and every max-pool a 2x2
    convolution with stride 2 and as many output as input channels
    (``down1``, ..., ``down5``; linear, no activation after it), as in the Bort
    authors' invertible VGG.

  The classifier has one hidden layer per entry of ``classifier_widths``
  (``fc6``, ``fc7``, ...), each followed by the activation and (when
  ``dropout_rate > 0``) an ``nnx.Dropout`` named ``fc{i}_dropout``. Its input
  is the flattened ``(image_size / 32) ** 2 * 512`` feature map (7x7x512 at
  224x224, as in torchvision; there is no adaptive pooling). For CIFAR-10,
  use ``image_size=32, classifier_widths=(512,)`` (or ``()``).

  Args:
    num_classes: number of output logits.
    in_channels: input channels.
    image_size: input height and width, a multiple of 32.
    classifier_widths: widths of the hidden classifier layers.
    dropout_rate: dropout after each hidden classifier layer (``0``: none).
    invertible: build the invertible variant (see above).
    leaky_relu_slope: negative slope of the LeakyReLUs of the invertible
      variant.
    dtype: computation dtype (``None``: that of the input).
    param_dtype: parameter dtype.
    rngs: random number generators for the initialisation and dropout.

  Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from bort_jax.models import VGG16
    >>> def cifar_logits(x):
    ...   model = VGG16(num_classes=10, image_size=32, classifier_widths=(512,),
    ...                 rngs=nnx.Rngs(0))
    ...   model.eval()  # no dropout
    ...   return model(x)
    >>> # Shapes only: traced, nothing allocated or computed.
    >>> nnx.eval_shape(cifar_logits, jnp.zeros((1, 32, 32, 3))).shape
    (1, 10)
  """

  def __init__(
      self,
      num_classes: int = 1000,
      *,
      in_channels: int = 3,
      image_size: int = 224,
      classifier_widths: Sequence[int] = (4096, 4096),
      dropout_rate: float = 0.5,
      invertible: bool = False,
      leaky_relu_slope: float = 0.5,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      rngs: nnx.Rngs,
  ):
    factor = 2 ** len(VGG16_STAGES)
    if image_size % factor:
      raise ValueError(
          f'image_size {image_size} must be a multiple of {factor}'
      )

    def activation() -> tuple[str, nnx.Module]:
      return (
          ('lrelu', LeakyReLU(leaky_relu_slope))
          if invertible
          else ('relu', ReLU())
      )

    # torchvision's VGG initialisation: He normal (fan out) for convolutions,
    # N(0, 0.01) for the classifier, zero biases.
    conv_init = nnx.initializers.variance_scaling(2.0, 'fan_out', 'normal')
    linear_init = nnx.initializers.normal(0.01)
    common = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    layers: list[tuple[str, nnx.Module]] = []
    width = in_channels
    for stage, stage_channels in enumerate(VGG16_STAGES, start=1):
      for i, out_channels in enumerate(stage_channels, start=1):
        name = f'conv{stage}_{i}'
        layers.append(
            (
                name,
                nnx.Conv(
                    width,
                    out_channels,
                    (3, 3),
                    strides=(1, 1),
                    padding=_PAD_1,
                    kernel_init=conv_init,
                    **common,
                ),
            )
        )
        act_name, act = activation()
        layers.append((f'{name}_{act_name}', act))
        width = out_channels
      if invertible:
        layers.append(
            (
                f'down{stage}',
                nnx.Conv(
                    width,
                    width,
                    (2, 2),
                    strides=(2, 2),
                    padding=_NO_PADDING,
                    kernel_init=conv_init,
                    **common,
                ),
            )
        )
      else:
        layers.append((f'pool{stage}', MaxPool(2, 2)))

    final_size = image_size // factor
    layers.append(('flatten', Flatten()))
    features = final_size * final_size * width
    for i, hidden in enumerate(classifier_widths, start=6):
      name = f'fc{i}'
      layers.append(
          (
              name,
              nnx.Linear(features, hidden, kernel_init=linear_init, **common),
          )
      )
      act_name, act = activation()
      layers.append((f'{name}_{act_name}', act))
      if dropout_rate > 0:
        layers.append((f'{name}_dropout', nnx.Dropout(dropout_rate, rngs=rngs)))
      features = hidden
    layers.append(
        (
            'classifier',
            nnx.Linear(
                features, num_classes, kernel_init=linear_init, **common
            ),
        )
    )
    super().__init__(layers)
    self.num_classes = num_classes
    self.in_channels = in_channels
    self.image_size = image_size
    self.invertible = invertible


class InvertibleVGG16(VGG16):
  """``VGG16(invertible=True)``: LeakyReLUs and stride-2 convolutions.

  Takes the same arguments as :class:`VGG16` except ``invertible``.

  Example:
    >>> from flax import nnx
    >>> from bort_jax.models import InvertibleVGG16
    >>> # Shapes only (nothing allocated).
    >>> model = nnx.eval_shape(lambda: InvertibleVGG16(
    ...     num_classes=10, image_size=32, classifier_widths=(), rngs=nnx.Rngs(0)))
    >>> model.layer_names[:5]
    ('conv1_1', 'conv1_1_lrelu', 'conv1_2', 'conv1_2_lrelu', 'down1')
  """

  def __init__(self, num_classes: int = 1000, **kwargs: Any):
    if 'invertible' in kwargs:
      raise TypeError('InvertibleVGG16 is always invertible; use VGG16 instead')
    super().__init__(num_classes, invertible=True, **kwargs)
