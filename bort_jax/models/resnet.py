"""ResNet-18 (CIFAR stem) and ResNet-50 (ImageNet stem), with BatchNorm.

Layout follows torchvision (ResNet v1.5: the stride of a bottleneck block sits
on its 3x3 convolution). BatchNorm uses running statistics with PyTorch's
momentum 0.1 (``momentum=0.9`` in Flax's convention) and epsilon 1e-5; switch
between batch statistics and running averages with ``model.train()`` and
``model.eval()``. With ``dtype=jnp.bfloat16`` every convolution, norm and the
classifier compute in bfloat16 while parameters and batch statistics stay in
``param_dtype`` (float32); the logits come out in ``dtype``, so cast them to
float32 before the loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from bort_jax.models.layers import MaxPool

#: PyTorch's BatchNorm defaults (its momentum 0.1 is Flax's 0.9).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
#: He normal with fan-out, as torchvision initialises ResNet convolutions.
CONV_INIT = nnx.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def _padding(kernel_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
  """PyTorch-style symmetric padding ``k // 2`` for a ``k x k`` kernel."""
  p = kernel_size // 2
  return ((p, p), (p, p))


class _ConvFactory:
  """Builds the convolutions and BatchNorms of a ResNet with shared settings."""

  def __init__(self, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
    self.dtype = dtype
    self.param_dtype = param_dtype
    self.rngs = rngs

  def conv(
      self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1
  ) -> nnx.Conv:
    return nnx.Conv(
        in_ch,
        out_ch,
        (kernel_size, kernel_size),
        strides=stride,
        padding=_padding(kernel_size),
        use_bias=False,
        kernel_init=CONV_INIT,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        rngs=self.rngs,
    )

  def norm(self, channels: int, zero_scale: bool = False) -> nnx.BatchNorm:
    return nnx.BatchNorm(
        channels,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        scale_init=nnx.initializers.zeros
        if zero_scale
        else nnx.initializers.ones,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        rngs=self.rngs,
    )


class BasicBlock(nnx.Module):
  """Two 3x3 convolutions with a residual connection (ResNet-18/34).

  Args:
    in_channels: input channels.
    channels: output channels.
    stride: stride of the first convolution (and of the projection shortcut).
    zero_init_residual: initialise the last BatchNorm scale to zero, so the
      block starts as the identity.
    dtype: computation dtype.
    param_dtype: parameter dtype.
    rngs: random number generators.

  Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from bort_jax.models import BasicBlock
    >>> block = BasicBlock(4, 8, stride=2, rngs=nnx.Rngs(0))
    >>> block(jnp.zeros((2, 4, 4, 4))).shape
    (2, 2, 2, 8)
  """

  expansion = 1

  def __init__(
      self,
      in_channels: int,
      channels: int,
      *,
      stride: int = 1,
      zero_init_residual: bool = False,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      rngs: nnx.Rngs,
  ):
    make = _ConvFactory(dtype, param_dtype, rngs)
    self.conv1 = make.conv(in_channels, channels, 3, stride)
    self.bn1 = make.norm(channels)
    self.conv2 = make.conv(channels, channels, 3)
    self.bn2 = make.norm(channels, zero_scale=zero_init_residual)
    if stride != 1 or in_channels != channels:
      self.shortcut_conv = make.conv(in_channels, channels, 1, stride)
      self.shortcut_bn = make.norm(channels)
    else:
      self.shortcut_conv = None
      self.shortcut_bn = None

  def __call__(self, x: jax.Array) -> jax.Array:
    residual = x
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    if self.shortcut_conv is not None:
      residual = self.shortcut_bn(self.shortcut_conv(x))
    return jax.nn.relu(y + residual)


class BottleneckBlock(nnx.Module):
  """1x1 reduce, 3x3 (strided), 1x1 expand (x4), with a residual connection.

  Args:
    in_channels: input channels.
    channels: bottleneck width; the block outputs ``4 * channels``.
    stride: stride of the 3x3 convolution (and of the projection shortcut).
    zero_init_residual: initialise the last BatchNorm scale to zero.
    dtype: computation dtype.
    param_dtype: parameter dtype.
    rngs: random number generators.

  Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from bort_jax.models import BottleneckBlock
    >>> block = BottleneckBlock(8, 2, stride=2, rngs=nnx.Rngs(0))
    >>> block(jnp.zeros((1, 8, 8, 8))).shape
    (1, 4, 4, 8)
  """

  expansion = 4

  def __init__(
      self,
      in_channels: int,
      channels: int,
      *,
      stride: int = 1,
      zero_init_residual: bool = False,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      rngs: nnx.Rngs,
  ):
    make = _ConvFactory(dtype, param_dtype, rngs)
    out_channels = channels * self.expansion
    self.conv1 = make.conv(in_channels, channels, 1)
    self.bn1 = make.norm(channels)
    self.conv2 = make.conv(channels, channels, 3, stride)
    self.bn2 = make.norm(channels)
    self.conv3 = make.conv(channels, out_channels, 1)
    self.bn3 = make.norm(out_channels, zero_scale=zero_init_residual)
    if stride != 1 or in_channels != out_channels:
      self.shortcut_conv = make.conv(in_channels, out_channels, 1, stride)
      self.shortcut_bn = make.norm(out_channels)
    else:
      self.shortcut_conv = None
      self.shortcut_bn = None

  def __call__(self, x: jax.Array) -> jax.Array:
    residual = x
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    y = jax.nn.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    if self.shortcut_conv is not None:
      residual = self.shortcut_bn(self.shortcut_conv(x))
    return jax.nn.relu(y + residual)


class ResNet(nnx.Module):
  """Residual network: stem, four stages of residual blocks, pooled classifier.

  Args:
    block_cls: :class:`BasicBlock` or :class:`BottleneckBlock`.
    stage_sizes: number of blocks in each stage.
    num_classes: number of output logits.
    stem: ``'cifar'`` (3x3 convolution, stride 1, no max-pool) or
      ``'imagenet'`` (7x7 convolution, stride 2, then 3x3 max-pool, stride 2).
    in_channels: input channels.
    width: channels of the stem and of the first stage (doubled per stage).
    zero_init_residual: zero-initialise the last BatchNorm scale of every
      block.
    dtype: computation dtype (e.g. ``jnp.bfloat16``; ``None``: that of the
      input).
    param_dtype: parameter and batch-statistics dtype.
    rngs: random number generators for the initialisation.

  Parameter paths: ``stem_conv``, ``stem_bn``, ``stages/<s>/<b>/conv1`` ...,
  ``classifier``.

  Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from bort_jax.models import BasicBlock, ResNet
    >>> model = ResNet(BasicBlock, (1, 1), num_classes=10, width=4,
    ...                rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 16, 16, 3))).shape
    (2, 10)
  """

  def __init__(
      self,
      block_cls: type[BasicBlock] | type[BottleneckBlock],
      stage_sizes: Sequence[int],
      num_classes: int,
      *,
      stem: str = 'imagenet',
      in_channels: int = 3,
      width: int = 64,
      zero_init_residual: bool = False,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      rngs: nnx.Rngs,
  ):
    make = _ConvFactory(dtype, param_dtype, rngs)
    if stem == 'cifar':
      self.stem_conv = make.conv(in_channels, width, 3)
      self.stem_pool = None
    elif stem == 'imagenet':
      self.stem_conv = make.conv(in_channels, width, 7, stride=2)
      self.stem_pool = MaxPool(3, 2, padding=_padding(3))
    else:
      raise ValueError(
          f"unknown stem {stem!r}; valid stems: ['cifar', 'imagenet']"
      )
    self.stem_bn = make.norm(width)

    stages = []
    features = width
    for stage, num_blocks in enumerate(stage_sizes):
      channels = width * 2**stage
      blocks = []
      for b in range(num_blocks):
        stride = 2 if (stage > 0 and b == 0) else 1
        blocks.append(
            block_cls(
                features,
                channels,
                stride=stride,
                zero_init_residual=zero_init_residual,
                dtype=dtype,
                param_dtype=param_dtype,
                rngs=rngs,
            )
        )
        features = channels * block_cls.expansion
      stages.append(nnx.List(blocks))
    self.stages = nnx.List(stages)
    self.classifier = nnx.Linear(
        features, num_classes, dtype=dtype, param_dtype=param_dtype, rngs=rngs
    )
    self.num_classes = num_classes
    self.stem = stem

  def features(self, x: jax.Array) -> jax.Array:
    """Returns the last feature map, ``(N, H', W', C)``, before pooling."""
    x = jax.nn.relu(self.stem_bn(self.stem_conv(x)))
    if self.stem_pool is not None:
      x = self.stem_pool(x)
    for stage in self.stages:
      for block in stage:
        x = block(x)
    return x

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.features(x)
    x = jnp.mean(x, axis=(1, 2))
    return self.classifier(x)


class ResNet18(ResNet):
  """ResNet-18, by default with the CIFAR stem (3x3 convolution, no max-pool).

  Args:
    num_classes: number of output logits.
    stem: ``'cifar'`` (default) or ``'imagenet'``.
    **kwargs: further :class:`ResNet` arguments (``dtype``, ``width``, ...).

  Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from bort_jax.models import ResNet18
    >>> # Shapes only: traced, nothing allocated or computed.
    >>> logits = nnx.eval_shape(lambda: ResNet18(
    ...     num_classes=10, rngs=nnx.Rngs(0))(jnp.zeros((2, 32, 32, 3))))
    >>> logits.shape
    (2, 10)
  """

  def __init__(
      self, num_classes: int = 10, *, stem: str = 'cifar', **kwargs: Any
  ):
    super().__init__(BasicBlock, (2, 2, 2, 2), num_classes, stem=stem, **kwargs)


class ResNet50(ResNet):
  """ResNet-50, by default with the ImageNet stem (7x7/2 conv, 3x3/2 max-pool).

  Args:
    num_classes: number of output logits.
    stem: ``'imagenet'`` (default) or ``'cifar'``.
    **kwargs: further :class:`ResNet` arguments (``dtype``, ``width``, ...).

  Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from bort_jax.models import ResNet50
    >>> # Shapes only (nothing allocated); bfloat16 compute, float32 parameters.
    >>> model = nnx.eval_shape(
    ...     lambda: ResNet50(num_classes=1000, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)))
    >>> model.classifier.kernel.shape, model.classifier.kernel.dtype
    ((2048, 1000), dtype('float32'))
  """

  def __init__(
      self, num_classes: int = 1000, *, stem: str = 'imagenet', **kwargs: Any
  ):
    super().__init__(
        BottleneckBlock, (3, 4, 6, 3), num_classes, stem=stem, **kwargs
    )
