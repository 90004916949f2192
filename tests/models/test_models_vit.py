"""Vision Transformer / DeiT-S: layout, dropout modes, bf16 compute."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bort_jax.models import VisionTransformer, create_model


def test_deit_s_layout(abstract_model):
  model = abstract_model('deit_s', 1000)
  assert isinstance(model, VisionTransformer)
  assert len(model.blocks) == 12
  assert model.patch_embed.proj.kernel.shape == (16, 16, 3, 384)
  assert model.patch_embed.proj.strides == 16
  assert model.cls_token.shape == (1, 1, 384)
  assert model.pos_embed.shape == (1, 1 + 14 * 14, 384)
  attention = model.blocks[0].attention
  assert isinstance(attention, nnx.MultiHeadAttention)
  for projection in (attention.query, attention.key, attention.value):
    assert projection.kernel.shape == (384, 6, 64)
  assert attention.out.kernel.shape == (6, 64, 384)
  assert model.blocks[0].mlp.fc1.kernel.shape == (384, 1536)
  assert model.head.kernel.shape == (384, 1000)
  # Stochastic depth rises linearly to 0.1.
  assert model.blocks[0].drop_path.rate == 0.0
  assert abs(model.blocks[-1].drop_path.rate - 0.1) < 1e-9


def test_tiny_vit_forward_and_dropout_modes(fast_rngs, random_images):
  model = create_model(
      'vit_tiny_test',
      num_classes=10,
      drop_path_rate=0.5,
      dropout_rate=0.1,
      rngs=fast_rngs(),
  )
  x = random_images((2, 32, 32, 3))
  assert model.features(x).shape == (2, 1 + 8 * 8, 64)
  model.train()
  assert not np.allclose(model(x), model(x))
  model.eval()
  logits = model(x)
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  np.testing.assert_array_equal(model(x), logits)


def test_bf16_compute_f32_params(fast_rngs, random_images):
  """bfloat16 compute, float32 parameters; the logits agree with the float32
  model of the same parameters to bfloat16 precision."""
  model = create_model(
      'vit_tiny_test', num_classes=10, dtype=jnp.bfloat16, rngs=fast_rngs()
  )
  model.eval()
  x = random_images((2, 32, 32, 3))
  assert model.patch_embed(x).dtype == jnp.bfloat16
  assert model.features(x).dtype == jnp.bfloat16
  logits = model(x)
  assert logits.shape == (2, 10) and logits.dtype == jnp.bfloat16
  assert {p.dtype for p in jax.tree.leaves(nnx.state(model, nnx.Param))} == {
      jnp.dtype(jnp.float32)
  }
  reference = create_model('vit_tiny_test', num_classes=10, rngs=fast_rngs())
  reference.eval()
  nnx.update(reference, nnx.state(model, nnx.Param))
  want = np.asarray(reference(x))
  got = np.asarray(logits.astype(jnp.float32))
  assert np.all(np.isfinite(got)) and np.abs(want).max() > 0
  np.testing.assert_allclose(got, want, atol=0.05 * np.abs(want).max())


def test_deit_s_bf16_abstract(abstract_model, abstract_apply):
  model = abstract_model('deit_s', 1000, dtype=jnp.bfloat16)
  assert abstract_apply(model, (2, 224, 224, 3)).dtype == jnp.bfloat16
  assert {p.dtype for p in jax.tree.leaves(nnx.state(model, nnx.Param))} == {
      jnp.dtype(jnp.float32)
  }
