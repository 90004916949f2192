"""A small invertible convolutional network for MNIST and CIFAR-10."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
from flax import nnx

from bort_jax.models.layers import Flatten, LeakyReLU, NamedSequential

#: 3x3 convolution, stride 1, one pixel of zero padding on each side: keeps
#: the spatial size (what PyTorch's ``padding=1`` does).
SAME_3X3 = ((1, 1), (1, 1))
#: 2x2 convolution, stride 2, no padding: halves an even spatial size.
NO_PADDING = ((0, 0), (0, 0))


class InvertibleCNN(NamedSequential):
  """Convolutional classifier in which every layer has an inverse.

  Each stage is a 3x3 convolution (stride 1, padding 1: size kept) and a 2x2
  convolution with stride 2 (no padding: size halved) in place of
  max-pooling, each followed by a LeakyReLU. No BatchNorm. A single linear
  classifier reads the flattened last feature map. With the defaults on
  MNIST the shapes are 28x28x1 -> 28x28x32 -> 14x14x32 -> 14x14x64 -> 7x7x64
  -> 3136 -> 10, and the layers are::

    conv1, conv1_lrelu, down1, down1_lrelu,
    conv2, conv2_lrelu, down2, down2_lrelu, flatten, classifier

  Args:
    num_classes: number of output logits.
    in_channels: input channels (1 for MNIST, 3 for CIFAR-10).
    image_size: input height and width; must be divisible by
      ``2 ** len(channels)``.
    channels: output channels of each stage; its length is the number of
      stages.
    leaky_relu_slope: negative slope of the LeakyReLUs.
    dtype: computation dtype (``None``: that of the input).
    param_dtype: parameter dtype.
    rngs: random number generators for the initialisation.

  Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> model = InvertibleCNN(in_channels=3, image_size=32, rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 32, 32, 3))).shape
    (2, 10)
    >>> model.forward_to(jnp.zeros((2, 32, 32, 3)), 'down2').shape
    (2, 8, 8, 64)
  """

  def __init__(
    self,
    num_classes: int = 10,
    *,
    in_channels: int = 1,
    image_size: int = 28,
    channels: Sequence[int] = (32, 64),
    leaky_relu_slope: float = 0.5,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
    rngs: nnx.Rngs,
  ):
    factor = 2 ** len(channels)
    if image_size % factor:
      raise ValueError(
        f'image_size {image_size} must be divisible by {factor} '
        f'(one halving per stage, {len(channels)} stages)'
      )
    conv_kwargs = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    layers: list[tuple[str, nnx.Module]] = []
    width = in_channels
    for stage, out_channels in enumerate(channels, start=1):
      layers += [
        (f'conv{stage}', nnx.Conv(
          width, out_channels, (3, 3), strides=(1, 1), padding=SAME_3X3,
          **conv_kwargs)),
        (f'conv{stage}_lrelu', LeakyReLU(leaky_relu_slope)),
        (f'down{stage}', nnx.Conv(
          out_channels, out_channels, (2, 2), strides=(2, 2), padding=NO_PADDING,
          **conv_kwargs)),
        (f'down{stage}_lrelu', LeakyReLU(leaky_relu_slope)),
      ]
      width = out_channels
    final_size = image_size // factor
    layers += [
      ('flatten', Flatten()),
      ('classifier', nnx.Linear(
        final_size * final_size * width, num_classes, **conv_kwargs)),
    ]
    super().__init__(layers)
    self.num_classes = num_classes
    self.in_channels = in_channels
    self.image_size = image_size
