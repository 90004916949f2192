"""Each ImageNet config trains 2 steps and evaluates, on ``tfds.testing.mock_data``.

No ImageNet pixels exist here; the mock serves random examples of random
sizes with the real features. The configs run as they are (optimizer, Bort
gamma and adaptive amplitude, schedule, label smoothing, bfloat16 compute,
augmentation) except for the resolution (32 pixels), the batch and the
model's size, so the check is cheap.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import pytest
import tensorflow_datasets as tfds

from bort_jax.training import configs, train

NUM_EXAMPLES = 8

# config -> model arguments that shrink it (the model family stays).
SHRINK = {
    'imagenet_resnet50': {'width': 4},
    'imagenet_deit_s': {'depth': 1, 'embed_dim': 32, 'num_heads': 2, 'patch_size': 8},
    'imagenet_vgg16': {'classifier_widths': [16, 16]},
}


def test_every_imagenet_config_is_covered():
  assert set(SHRINK) == {name for name in configs.CONFIG_NAMES if name.startswith('imagenet')}


@pytest.mark.parametrize('name', sorted(SHRINK))
def test_imagenet_config_smoke(name, tmp_path):
  config = configs.get_config(name)
  assert config.dataset == 'imagenet2012'
  smoke = dataclasses.replace(
      config, image_size=32, batch_size=4, eval_batch_size=4, epochs=1, data_threads=2,
      log_every_steps=1, model_kwargs=SHRINK[name])
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    result = train.train_and_evaluate(smoke, tmp_path, data_dir=str(tmp_path / 'tfds'),
                                      download=True, progress=False)
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
