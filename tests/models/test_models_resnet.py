"""ResNet-18/50: BatchNorm train/eval behaviour, bf16 compute, block layout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bort_jax.models import BasicBlock, BottleneckBlock, ResNet, ResNet18


def batch_stats(model):
  return jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat))


def batchnorm_modes(model):
  """The ``use_running_average`` values of the model's BatchNorm layers."""
  return {
      bn.use_running_average
      for _, bn in nnx.iter_modules(model)
      if isinstance(bn, nnx.BatchNorm)
  }


@pytest.fixture(scope='module')
def resnet18(fast_rngs):
  return ResNet18(num_classes=10, rngs=fast_rngs())


def test_resnet18_forward(resnet18, random_images):
  """Logits are the classifier of the globally averaged last feature map;
  finite, and different for different images."""
  resnet18.eval()
  x = random_images((2, 32, 32, 3))
  logits = resnet18(x)
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  features = resnet18.features(x)
  assert features.shape == (2, 4, 4, 512)
  assert bool(jnp.all(features >= 0))  # after the last block's ReLU
  pooled = np.asarray(features).mean(axis=(1, 2))
  kernel = np.asarray(resnet18.classifier.kernel[...])
  bias = np.asarray(resnet18.classifier.bias[...])
  np.testing.assert_allclose(
      logits, pooled @ kernel + bias, rtol=1e-4, atol=1e-5
  )
  assert bool(jnp.all(jnp.isfinite(logits)))
  assert float(jnp.abs(logits[0] - logits[1]).max()) > 0


def test_batchnorm_train_vs_eval(resnet18, random_images):
  x = random_images((4, 32, 32, 3), seed=1)

  resnet18.train()
  assert batchnorm_modes(resnet18) == {False}
  before = batch_stats(resnet18)
  train_logits = resnet18(x)
  after_train = batch_stats(resnet18)
  changed = jax.tree.leaves(
      jax.tree.map(lambda a, b: not np.allclose(a, b), before, after_train)
  )
  assert all(changed), 'every running mean/var moves in train mode'
  # Train mode normalises with the batch's statistics: a sample's output
  # depends on the rest of the batch.
  assert not np.allclose(resnet18(x[:2])[:2], train_logits[:2], atol=1e-4)

  resnet18.eval()
  assert batchnorm_modes(resnet18) == {True}
  stats = batch_stats(resnet18)
  eval_logits = resnet18(x)
  jax.tree.map(np.testing.assert_array_equal, stats, batch_stats(resnet18))
  # Eval mode uses the running averages: samples are independent.
  np.testing.assert_allclose(
      resnet18(x[:2]), eval_logits[:2], rtol=1e-4, atol=1e-4
  )


def test_momentum_matches_pytorch(resnet18):
  norms = [
      m for _, m in nnx.iter_modules(resnet18) if isinstance(m, nnx.BatchNorm)
  ]
  assert len(norms) == 1 + 8 * 2 + 3
  assert {bn.momentum for bn in norms} == {0.9}
  assert {bn.epsilon for bn in norms} == {1e-5}


def test_block_layout(abstract_model):
  r18 = abstract_model('resnet18', 10)
  r50 = abstract_model('resnet50', 1000)
  assert [len(stage) for stage in r18.stages] == [2, 2, 2, 2]
  assert [len(stage) for stage in r50.stages] == [3, 4, 6, 3]
  assert all(isinstance(b, BasicBlock) for stage in r18.stages for b in stage)
  assert all(
      isinstance(b, BottleneckBlock) for stage in r50.stages for b in stage
  )
  # CIFAR stem: 3x3 stride 1, no max-pool. ImageNet stem: 7x7/2 and max-pool.
  assert r18.stem_conv.kernel.shape == (3, 3, 3, 64) and r18.stem_pool is None
  assert (
      r50.stem_conv.kernel.shape == (7, 7, 3, 64) and r50.stem_conv.strides == 2
  )
  assert r50.stem_pool is not None
  # v1.5: the stride of a bottleneck sits on its 3x3 convolution.
  first = r50.stages[1][0]
  assert first.conv2.strides == 2 and first.conv1.strides == 1
  assert first.shortcut_conv.kernel.shape == (1, 1, 256, 512)
  assert r50.classifier.kernel.shape == (2048, 1000)


def test_imagenet_stem_divides_the_resolution_by_32(
    abstract_model, abstract_apply
):
  model = abstract_model('resnet18', 10, stem='imagenet')
  assert abstract_apply(model, (2, 64, 64, 3)).shape == (2, 10)
  assert abstract_apply(model, (2, 64, 64, 3), method='features').shape == (
      2,
      2,
      2,
      512,
  )


def test_bf16_compute_f32_params_resnet50(abstract_model, abstract_apply):
  model = abstract_model('resnet50', 1000, dtype=jnp.bfloat16)
  features = abstract_apply(model, (2, 224, 224, 3), method='features')
  assert features.shape == (2, 7, 7, 2048) and features.dtype == jnp.bfloat16
  assert abstract_apply(model, (2, 224, 224, 3)).dtype == jnp.bfloat16
  for collection in (nnx.Param, nnx.BatchStat):
    dtypes = {x.dtype for x in jax.tree.leaves(nnx.state(model, collection))}
    assert dtypes == {jnp.dtype(jnp.float32)}


def test_bf16_real_forward_small_resnet(fast_rngs, random_images):
  model = ResNet(
      BasicBlock,
      (1, 1),
      num_classes=10,
      stem='cifar',
      width=8,
      dtype=jnp.bfloat16,
      rngs=fast_rngs(),
  )
  x = random_images((2, 8, 8, 3))
  model.train()
  before = batch_stats(model)
  assert model.features(x).dtype == jnp.bfloat16
  logits = model(x)
  assert logits.shape == (2, 10) and logits.dtype == jnp.bfloat16
  assert bool(jnp.all(jnp.isfinite(logits.astype(jnp.float32))))
  after = batch_stats(model)
  assert {x.dtype for x in jax.tree.leaves(after)} == {jnp.dtype(jnp.float32)}
  assert not np.allclose(before['stem_bn']['mean'], after['stem_bn']['mean'])
  assert {p.dtype for p in jax.tree.leaves(nnx.state(model, nnx.Param))} == {
      jnp.dtype(jnp.float32)
  }
