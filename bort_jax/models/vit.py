"""Vision Transformer (ViT) in the DeiT configuration.

Pre-norm transformer encoder over 16x16 patches with a class token and a
learned position embedding, as in DeiT (Touvron et al., 2021). The defaults
are DeiT-S: width 384, 6 heads, 12 blocks, MLP ratio 4, 224x224 inputs
(about 22.05M parameters at 1000 classes). Attention is
``nnx.MultiHeadAttention``, whose ``query``/``key``/``value`` kernels are
``(width, heads, head_dim)`` and whose ``out`` kernel is
``(heads, head_dim, width)``.

With ``dtype=jnp.bfloat16`` all matmuls and norms compute in bfloat16 while
the parameters stay in ``param_dtype`` (float32); the logits come out in
``dtype``, so cast them to float32 before the loss.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

#: DeiT initialises linear layers, the class token and the position embedding
#: from a truncated normal with standard deviation 0.02.
TRUNC_NORMAL_02 = nnx.initializers.truncated_normal(stddev=0.02)
LAYER_NORM_EPSILON = 1e-6


class PatchEmbedding(nnx.Module):
  """Splits the image into non-overlapping patches and embeds each linearly.

  A convolution with kernel size and stride ``patch_size`` and no padding,
  reshaped to a token sequence.

  Args:
    in_channels: input channels.
    embed_dim: token width.
    patch_size: side of the square patches.
    dtype: computation dtype.
    param_dtype: parameter dtype.
    rngs: random number generators.

  Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from bort_jax.models import PatchEmbedding
    >>> embed = PatchEmbedding(3, 64, 4, rngs=nnx.Rngs(0))
    >>> embed(jnp.zeros((2, 32, 32, 3))).shape
    (2, 64, 64)
  """

  def __init__(
      self,
      in_channels: int,
      embed_dim: int,
      patch_size: int,
      *,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      rngs: nnx.Rngs,
  ):
    self.proj = nnx.Conv(
        in_channels,
        embed_dim,
        (patch_size, patch_size),
        strides=patch_size,
        padding='VALID',
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )

  def __call__(self, images: jax.Array) -> jax.Array:
    x = self.proj(images)  # (N, H / p, W / p, D)
    return x.reshape(x.shape[0], -1, x.shape[-1])


class FeedForward(nnx.Module):
  """Transformer MLP: Linear, GELU, dropout, Linear, dropout.

  Args:
    features: input and output width.
    hidden_features: hidden width.
    dropout_rate: dropout after each linear layer.
    dtype: computation dtype.
    param_dtype: parameter dtype.
    rngs: random number generators.

  Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from bort_jax.models import FeedForward
    >>> FeedForward(64, 256, rngs=nnx.Rngs(0))(jnp.zeros((2, 65, 64))).shape
    (2, 65, 64)
  """

  def __init__(
      self,
      features: int,
      hidden_features: int,
      *,
      dropout_rate: float = 0.0,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      rngs: nnx.Rngs,
  ):
    common = dict(
        kernel_init=TRUNC_NORMAL_02,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )
    self.fc1 = nnx.Linear(features, hidden_features, **common)
    self.fc2 = nnx.Linear(hidden_features, features, **common)
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.dropout(jax.nn.gelu(self.fc1(x), approximate=False))
    return self.dropout(self.fc2(x))


class EncoderBlock(nnx.Module):
  """Pre-norm transformer block: ``x + attn(norm(x))``, ``x + mlp(norm(x))``.

  Each residual branch goes through stochastic depth (a per-sample dropout of
  the whole branch) with rate ``drop_path_rate``.

  Args:
    embed_dim: token width.
    num_heads: attention heads; ``embed_dim`` must be divisible by it.
    mlp_ratio: hidden width of the MLP over ``embed_dim``.
    dropout_rate: dropout in the MLP and after the attention projection.
    attention_dropout_rate: dropout on the attention weights.
    drop_path_rate: stochastic-depth rate of both residual branches.
    dtype: computation dtype.
    param_dtype: parameter dtype.
    rngs: random number generators.

  Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from bort_jax.models import EncoderBlock
    >>> block = EncoderBlock(64, 2, rngs=nnx.Rngs(0))
    >>> block(jnp.zeros((2, 65, 64))).shape
    (2, 65, 64)
  """

  def __init__(
      self,
      embed_dim: int,
      num_heads: int,
      *,
      mlp_ratio: float = 4.0,
      dropout_rate: float = 0.0,
      attention_dropout_rate: float = 0.0,
      drop_path_rate: float = 0.0,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      rngs: nnx.Rngs,
  ):
    norm = dict(
        epsilon=LAYER_NORM_EPSILON,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )
    self.norm1 = nnx.LayerNorm(embed_dim, **norm)
    self.attention = nnx.MultiHeadAttention(
        num_heads,
        embed_dim,
        qkv_features=embed_dim,
        out_features=embed_dim,
        dropout_rate=attention_dropout_rate,
        kernel_init=TRUNC_NORMAL_02,
        decode=False,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )
    self.attention_dropout = nnx.Dropout(dropout_rate, rngs=rngs)
    self.norm2 = nnx.LayerNorm(embed_dim, **norm)
    self.mlp = FeedForward(
        embed_dim,
        int(embed_dim * mlp_ratio),
        dropout_rate=dropout_rate,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )
    # Broadcasting the mask over tokens and channels drops whole samples.
    self.drop_path = nnx.Dropout(
        drop_path_rate, broadcast_dims=(1, 2), rngs=rngs
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.attention(self.norm1(x))
    x = x + self.drop_path(self.attention_dropout(y))
    return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(nnx.Module):
  """ViT classifier reading the class token; defaults are DeiT-S/16 at 224.

  Args:
    num_classes: number of output logits.
    image_size: input height and width, a multiple of ``patch_size``.
    patch_size: side of the square patches.
    in_channels: input channels.
    embed_dim: token width.
    depth: number of encoder blocks.
    num_heads: attention heads.
    mlp_ratio: MLP hidden width over ``embed_dim``.
    dropout_rate: dropout on the embeddings, in the MLPs and after the
      attention projections.
    attention_dropout_rate: dropout on the attention weights.
    drop_path_rate: stochastic depth, rising linearly from 0 at the first block
      to this value at the last (DeiT-S uses 0.1).
    dtype: computation dtype (``None``: that of the input).
    param_dtype: parameter dtype.
    rngs: random number generators for the initialisation and dropout.

  Parameter paths: ``patch_embed/proj/kernel``, ``cls_token``
  ``(1, 1, D)``, ``pos_embed`` ``(1, 1 + num_patches, D)``,
  ``blocks/<i>/attention/{query,key,value,out}/kernel``,
  ``blocks/<i>/mlp/{fc1,fc2}/kernel``, ``norm``, ``head``.

  Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from bort_jax.models import VisionTransformer
    >>> model = VisionTransformer(10, image_size=32, patch_size=4, embed_dim=64,
    ...                           depth=2, num_heads=2, rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 32, 32, 3))).shape
    (2, 10)
  """

  def __init__(
      self,
      num_classes: int = 1000,
      *,
      image_size: int = 224,
      patch_size: int = 16,
      in_channels: int = 3,
      embed_dim: int = 384,
      depth: int = 12,
      num_heads: int = 6,
      mlp_ratio: float = 4.0,
      dropout_rate: float = 0.0,
      attention_dropout_rate: float = 0.0,
      drop_path_rate: float = 0.0,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      rngs: nnx.Rngs,
  ):
    if image_size % patch_size:
      raise ValueError(
          f'image_size {image_size} must be a multiple of patch_size {patch_size}'
      )
    if embed_dim % num_heads:
      raise ValueError(
          f'embed_dim {embed_dim} must be divisible by num_heads {num_heads}'
      )
    num_patches = (image_size // patch_size) ** 2
    self.patch_embed = PatchEmbedding(
        in_channels,
        embed_dim,
        patch_size,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )
    self.cls_token = nnx.Param(
        TRUNC_NORMAL_02(rngs.params(), (1, 1, embed_dim), param_dtype)
    )
    self.pos_embed = nnx.Param(
        TRUNC_NORMAL_02(
            rngs.params(), (1, 1 + num_patches, embed_dim), param_dtype
        )
    )
    self.pos_dropout = nnx.Dropout(dropout_rate, rngs=rngs)
    self.blocks = nnx.List(
        [
            EncoderBlock(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                dropout_rate=dropout_rate,
                attention_dropout_rate=attention_dropout_rate,
                drop_path_rate=drop_path_rate * i / max(depth - 1, 1),
                dtype=dtype,
                param_dtype=param_dtype,
                rngs=rngs,
            )
            for i in range(depth)
        ]
    )
    self.norm = nnx.LayerNorm(
        embed_dim,
        epsilon=LAYER_NORM_EPSILON,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )
    self.head = nnx.Linear(
        embed_dim,
        num_classes,
        kernel_init=TRUNC_NORMAL_02,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )
    self.num_classes = num_classes
    self.image_size = image_size
    self.patch_size = patch_size

  def features(self, images: jax.Array) -> jax.Array:
    """Returns the normalised token sequence ``(N, 1 + num_patches, D)``."""
    x = self.patch_embed(images)
    cls_token = jnp.broadcast_to(
        self.cls_token[...].astype(x.dtype), (x.shape[0], 1, x.shape[-1])
    )
    x = jnp.concatenate([cls_token, x], axis=1)
    x = self.pos_dropout(x + self.pos_embed[...].astype(x.dtype))
    for block in self.blocks:
      x = block(x)
    return self.norm(x)

  def __call__(self, images: jax.Array) -> jax.Array:
    return self.head(self.features(images)[:, 0])


def deit_small(
    num_classes: int = 1000, *, rngs: nnx.Rngs, **kwargs: Any
) -> VisionTransformer:
  """DeiT-S/16: width 384, 6 heads, 12 blocks, stochastic depth 0.1.

  Args:
    num_classes: number of output logits.
    rngs: random number generators.
    **kwargs: overrides of the :class:`VisionTransformer` arguments.

  Example:
    >>> from flax import nnx
    >>> from bort_jax.models import deit_small
    >>> model = nnx.eval_shape(lambda: deit_small(rngs=nnx.Rngs(0)))
    >>> model.blocks[0].attention.query.kernel.shape
    (384, 6, 64)
  """
  config = dict(
      image_size=224,
      patch_size=16,
      embed_dim=384,
      depth=12,
      num_heads=6,
      mlp_ratio=4.0,
      drop_path_rate=0.1,
  )
  config.update(kwargs)
  return VisionTransformer(num_classes, rngs=rngs, **config)
