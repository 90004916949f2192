"""Each ImageNet config trains 2 steps and evaluates, on ``tfds.testing.mock_data``.

No ImageNet pixels exist here; the mock serves random examples of random
sizes with the real features. The configs run as they are (optimizer, Bort
gamma and adaptive amplitude, schedule, label smoothing, bfloat16 compute,
augmentation) except for the resolution (32 pixels), the batch and the
model's size, so the check is cheap. ResNet-50's 16 bottleneck blocks alone
take minutes to compile on a CPU, so its recipe runs with a ResNet-18 of
width 4 and the ImageNet stem; the ResNet-50 graph itself is checked (shapes
only) in tests/models.
"""

import math

import jax
import jax.numpy as jnp
import pytest
import tensorflow_datasets as tfds

from bort_jax import configs
from bort_jax.training import loop

pytestmark = pytest.mark.expensive

NUM_EXAMPLES = 8

# config -> the changes that shrink its model.
SHRINK = {
    'imagenet_resnet50': dict(
        model='resnet18', model_kwargs={'width': 4, 'stem': 'imagenet'}
    ),
    'imagenet_deit_s': dict(
        model_kwargs={
            'depth': 1,
            'embed_dim': 32,
            'num_heads': 2,
            'patch_size': 8,
        }
    ),
    'imagenet_vgg16': dict(model_kwargs={'classifier_widths': [16, 16]}),
}


def test_every_imagenet_config_is_covered():
  assert set(SHRINK) == {
      name for name in configs.CONFIG_NAMES if name.startswith('imagenet')
  }


@pytest.mark.parametrize('name', sorted(SHRINK))
def test_imagenet_config_smoke(name, tmp_path):
  config = configs.get_config(name)
  assert config.dataset == 'imagenet2012'
  smoke = configs.replace(
      config,
      image_size=32,
      batch_size=4,
      eval_batch_size=4,
      epochs=1,
      data_workers=0,
      data_threads=2,
      log_every_steps=1,
      **SHRINK[name],
  )
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    result = loop.train_and_evaluate(
        smoke,
        tmp_path,
        data_dir=str(tmp_path / 'tfds'),
        download=True,
        progress=False,
    )
  assert int(result.state.step) == 2
  final = result.metrics[-1]
  assert final['eval_count'] == NUM_EXAMPLES
  for key in ('train_loss', 'eval_loss', 'eval_accuracy'):
    assert math.isfinite(final[key]), (key, final)
  assert math.isfinite(final['orthogonality']['relative_error/mean'])
  assert [r['step'] for r in result.metrics] == [1, 2]
  # bfloat16 compute, float32 parameters and optimizer state.
  assert config.dtype == 'bfloat16'
  for leaf in jax.tree.leaves((result.state.params, result.state.opt_state)):
    assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype
