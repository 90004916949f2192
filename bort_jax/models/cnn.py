"""Small invertible convolutional networks for MNIST and CIFAR-10.

:class:`InvertibleCNN` follows the usual CNN shape (strided convolutions in
place of max-pooling); :class:`BortInvertibleCNN` is shaped so that the
transposed weights invert every layer exactly once Bort has done its work.
"""

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
    >>> from bort_jax.models import InvertibleCNN
    >>> model = InvertibleCNN(channels=(4, 8), rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 28, 28, 1))).shape
    (2, 10)
    >>> model.forward_to(jnp.zeros((2, 28, 28, 1)), 'down2').shape
    (2, 7, 7, 8)
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
          (
              f'conv{stage}',
              nnx.Conv(
                  width,
                  out_channels,
                  (3, 3),
                  strides=(1, 1),
                  padding=SAME_3X3,
                  **conv_kwargs,
              ),
          ),
          (f'conv{stage}_lrelu', LeakyReLU(leaky_relu_slope)),
          (
              f'down{stage}',
              nnx.Conv(
                  out_channels,
                  out_channels,
                  (2, 2),
                  strides=(2, 2),
                  padding=NO_PADDING,
                  **conv_kwargs,
              ),
          ),
          (f'down{stage}_lrelu', LeakyReLU(leaky_relu_slope)),
      ]
      width = out_channels
    final_size = image_size // factor
    layers += [
        ('flatten', Flatten()),
        (
            'classifier',
            nnx.Linear(
                final_size * final_size * width, num_classes, **conv_kwargs
            ),
        ),
    ]
    super().__init__(layers)
    self.num_classes = num_classes
    self.in_channels = in_channels
    self.image_size = image_size


#: Kernel-path pattern of :class:`BortInvertibleCNN`'s classifier (layer 9),
#: for :func:`bort_jax.kernels_except`: the classifier is meant to be trained
#: free of the Bort term (in a config: ``bort_exclude=('classifier',)``).
BORT_INVERTIBLE_CNN_CLASSIFIER_PATTERN = '^layers/9/kernel$'


class BortInvertibleCNN(NamedSequential):
  r"""A CNN whose transposed weights invert it once Bort has trained it.

  Why the shape matters (``docs/method.md`` §5.1). Per patch a layer maps
  its fan-in :math:`n` (``kh * kw * C_in``) to :math:`d` units through
  :math:`M` = ``kernel.reshape(-1, d)``, of shape :math:`[n, d]`. Bort drives
  every singular value of :math:`M` to :math:`\sqrt a`. When :math:`d \ge n`
  (at least as many units as inputs per patch) that means
  :math:`M M^\top = a I_n`, so :math:`M^\top/a` (in torch terms
  :math:`W^\top/a`) is an exact left inverse: every patch, hence the layer
  and the whole network (LeakyReLU is a bijection), is recovered from its
  output by the transposed weights. When :math:`d < n` (a *wide* layer, as
  most of :class:`InvertibleCNN`'s are) :math:`M^\top` only projects onto a
  :math:`d`-dimensional subspace however orthogonal the units are: a 2x2
  stride-2 layer ``C -> C`` keeps a quarter of each block. Here every
  convolution is square or overcomplete::

    layer    kernel        fan-in  units   (MNIST, stem_channels=16)
    conv1    3x3, s1, pad1     9      16    1 -> s
    down1    2x2, s2          64      64    s -> 4s  (space-to-depth)
    conv2    1x1, s1          64      64    4s -> 4s
    down2    2x2, s2         256     256    4s -> 16s (space-to-depth)

  and the shapes are 28x28x1 -> 28x28x16 -> 14x14x64 -> 14x14x64 -> 7x7x256
  -> 12544 -> 10. Each convolution is followed by a LeakyReLU (slope 0.5, as
  in the Bort authors' invertible networks); a linear classifier reads the
  flattened last map. The layer names are those of :class:`InvertibleCNN`::

    conv1, conv1_lrelu, down1, down1_lrelu,
    conv2, conv2_lrelu, down2, down2_lrelu, flatten, classifier

  so ``down2_lrelu`` is the top conv representation of both. The classifier
  (``units < fan_in``, and its units are class templates, not a code to
  invert) is meant to be left out of the Bort term: pass
  :data:`BORT_INVERTIBLE_CNN_CLASSIFIER_PATTERN` (equal to
  ``model.kernel_pattern('classifier')``) to :func:`bort_jax.kernels_except`,
  or name it in a config: ``bort_exclude=('classifier',)``.

  Args:
    num_classes: number of output logits.
    in_channels: input channels (1 for MNIST, 3 for CIFAR-10).
    image_size: input height and width; must be divisible by 4.
    stem_channels: units :math:`s` of ``conv1``; at least its fan-in
      ``9 * in_channels``. The later widths are :math:`4s` and :math:`16s`.
    leaky_relu_slope: negative slope of the LeakyReLUs (``> 0``, so that
      they are invertible).
    dtype: computation dtype (``None``: that of the input).
    param_dtype: parameter dtype.
    rngs: random number generators for the initialisation.

  Raises:
    ValueError: if ``stem_channels < 9 * in_channels`` (``conv1`` would be
      wide), ``image_size`` is not divisible by 4, or the slope is not
      positive.

  Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from bort_jax.models import BortInvertibleCNN
    >>> # Shapes only: traced, nothing allocated or computed.
    >>> model = nnx.eval_shape(lambda: BortInvertibleCNN(rngs=nnx.Rngs(0)))
    >>> x = jnp.zeros((2, 28, 28, 1))
    >>> nnx.eval_shape(lambda model, x: model(x), model, x).shape
    (2, 10)
    >>> nnx.eval_shape(lambda model, x: model.forward_to(x, 'down2_lrelu'),
    ...                model, x).shape
    (2, 7, 7, 256)
    >>> model.patch_matrix_shapes()['down2']
    (256, 256)
  """

  def __init__(
      self,
      num_classes: int = 10,
      *,
      in_channels: int = 1,
      image_size: int = 28,
      stem_channels: int = 16,
      leaky_relu_slope: float = 0.5,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      rngs: nnx.Rngs,
  ):
    stem_fan_in = 9 * in_channels
    if stem_channels < stem_fan_in:
      raise ValueError(
          f'stem_channels {stem_channels} is below the fan-in of conv1 '
          f'(3 * 3 * {in_channels} = {stem_fan_in}): the transposed weights '
          'could not invert it; use stem_channels >= 9 * in_channels'
      )
    if image_size % 4:
      raise ValueError(
          f'image_size {image_size} must be divisible by 4 (two stride-2 '
          'downsamplings)'
      )
    if leaky_relu_slope <= 0:
      raise ValueError(
          f'leaky_relu_slope must be positive for the LeakyReLUs to be '
          f'invertible, got {leaky_relu_slope}'
      )
    kwargs = {'dtype': dtype, 'param_dtype': param_dtype, 'rngs': rngs}
    s = stem_channels

    def conv(name, c_in, c_out, size, stride, padding):
      return [
          (
              name,
              nnx.Conv(
                  c_in,
                  c_out,
                  (size, size),
                  strides=(stride, stride),
                  padding=padding,
                  **kwargs,
              ),
          ),
          (f'{name}_lrelu', LeakyReLU(leaky_relu_slope)),
      ]

    final_size = image_size // 4
    layers = [
        *conv('conv1', in_channels, s, 3, 1, SAME_3X3),
        *conv('down1', s, 4 * s, 2, 2, NO_PADDING),
        *conv('conv2', 4 * s, 4 * s, 1, 1, NO_PADDING),
        *conv('down2', 4 * s, 16 * s, 2, 2, NO_PADDING),
        ('flatten', Flatten()),
        (
            'classifier',
            nnx.Linear(final_size * final_size * 16 * s, num_classes, **kwargs),
        ),
    ]
    super().__init__(layers)
    self.num_classes = num_classes
    self.in_channels = in_channels
    self.image_size = image_size
