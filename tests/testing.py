"""Plain helpers shared by the tests (fixtures are in ``conftest.py``).

Tiny, exactly invertible models for the explainability tests (orthogonal
weights set directly, by QR of a Gaussian matrix, not trained), random arrays
drawn with numpy, bit-for-bit pytree comparison, and a quiet training run
with its ``metrics.jsonl`` read as strict JSON. The folder of the root
``conftest.py`` is on ``sys.path`` (pytest's rootdir-relative imports), so any
test module can ``from testing import ...``.
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bort_jax import data
from bort_jax.models.layers import Flatten, LeakyReLU, NamedSequential, ReLU

# A 16-unit MLP on 640 MNIST images for 2 epochs of 10 steps: the smallest
# bort-train run, as config fields.
TINY = {
    'epochs': 2,
    'batch_size': 64,
    'eval_batch_size': 128,
    'train_examples': 640,
    'eval_examples': 300,
    'model_kwargs': {'hidden_features': [16]},
}
# The same as bort-train arguments.
TINY_ARGS = [
    '--config',
    'mnist_mlp',
    '--no-progress',
    '--epochs',
    '2',
    '--batch-size',
    '64',
    '--set',
    'eval_batch_size=128',
    '--set',
    'train_examples=640',
    '--set',
    'eval_examples=300',
    '--set',
    'model_kwargs={"hidden_features": [16]}',
]

# The layers of InvertibleCNN and BortInvertibleCNN, in order.
INVERTIBLE_CNN_LAYER_NAMES = (
    'conv1',
    'conv1_lrelu',
    'down1',
    'down1_lrelu',
    'conv2',
    'conv2_lrelu',
    'down2',
    'down2_lrelu',
    'flatten',
    'classifier',
)


def assert_trees_equal(a, b):
  """Asserts two pytrees have equal leaves, bit for bit (PRNG keys by data)."""
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b)
  for x, y in zip(leaves_a, leaves_b):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def train(config, workdir, data_dir, **kwargs):
  """``loop.train_and_evaluate`` on ``data_dir`` without a progress bar."""
  from bort_jax.training import loop  # pylint: disable=import-outside-toplevel

  return loop.train_and_evaluate(
      config, workdir, data_dir=data_dir, progress=False, **kwargs
  )


def _no_constant(name):
  raise ValueError(f'not strict JSON: {name}')


def strict_records(workdir):
  """metrics.jsonl as strict JSON (no NaN), steps unique and increasing."""
  text = (Path(workdir) / 'metrics.jsonl').read_text()
  assert text.endswith('\n')
  records = [
      json.loads(line, parse_constant=_no_constant)
      for line in text.splitlines()
  ]
  steps = [r['step'] for r in records]
  assert steps == sorted(set(steps)), steps
  return records


def orthonormal(seed, rows, cols):
  """``[rows, cols]`` with orthonormal columns (rows >= cols) or rows.

  Drawn with numpy (no JAX compilation for test set-up).
  """
  rng = np.random.default_rng(seed)
  q, _ = np.linalg.qr(rng.standard_normal((max(rows, cols), min(rows, cols))))
  return jnp.asarray(q if rows >= cols else q.T, jnp.float32)


def normal(seed, shape):
  """float32 standard normal samples, drawn with numpy."""
  return jnp.asarray(
      np.random.default_rng(seed).standard_normal(shape), jnp.float32
  )


def uniform(seed, shape):
  """float32 samples uniform in [0, 1), drawn with numpy."""
  return jnp.asarray(np.random.default_rng(seed).random(shape), jnp.float32)


def linear(fan_in, units, seed=0, use_bias=True):
  """An ``nnx.Linear`` with He-normal weights drawn by numpy.

  Zero-initialised, then filled: JAX's truncated-normal initialiser takes
  seconds to compile on CPU for every new shape.
  """
  layer = nnx.Linear(
      fan_in,
      units,
      use_bias=use_bias,
      kernel_init=nnx.initializers.zeros,
      rngs=nnx.Rngs(0),
  )
  rng = np.random.default_rng(seed)
  layer.kernel[...] = jnp.asarray(
      rng.standard_normal((fan_in, units)) * np.sqrt(2.0 / fan_in), jnp.float32
  )
  if use_bias:
    layer.bias[...] = jnp.asarray(0.1 * rng.standard_normal(units), jnp.float32)
  return layer


def conv(in_features, out_features, kernel_size, seed=0, **kwargs):
  """An ``nnx.Conv`` with He-normal weights drawn by numpy (see :func:`linear`)."""
  layer = nnx.Conv(
      in_features,
      out_features,
      kernel_size,
      kernel_init=nnx.initializers.zeros,
      rngs=nnx.Rngs(0),
      **kwargs,
  )
  shape = layer.kernel[...].shape
  fan_in = int(np.prod(shape[:-1]))
  layer.kernel[...] = jnp.asarray(
      np.random.default_rng(seed).standard_normal(shape)
      * np.sqrt(2.0 / fan_in),
      jnp.float32,
  )
  return layer


def mlp(sizes, seed=0, activation=ReLU):
  """``flatten, fc1, fc1_act, ..., classifier`` with widths ``sizes``."""
  layers = [('flatten', Flatten())]
  for i, (fan_in, units) in enumerate(zip(sizes[:-2], sizes[1:-1]), start=1):
    layers += [
        (f'fc{i}', linear(fan_in, units, seed + i)),
        (f'fc{i}_act', activation()),
    ]
  layers.append(('classifier', linear(sizes[-2], sizes[-1], seed)))
  return NamedSequential(layers)


def set_orthogonal(layer, seed, bias_scale=0.1):
  """Gives an ``nnx.Conv``/``nnx.Linear`` orthonormal units and a random bias."""
  kernel = layer.kernel[...]
  fan_in, units = kernel.reshape(-1, kernel.shape[-1]).shape
  layer.kernel[...] = orthonormal(seed, fan_in, units).reshape(kernel.shape)
  if layer.bias is not None:
    bias = np.random.default_rng(seed + 1).standard_normal(
        layer.bias[...].shape
    )
    layer.bias[...] = jnp.asarray(bias_scale * bias, jnp.float32)


def make_lossless_cnn(seed=0, num_classes=10):
  """8x8x1 -> conv 3x3 (9 ch) -> LeakyReLU -> conv 2x2/2 (36 ch) -> LeakyReLU
  -> flatten (576) -> classifier. The im2col matrices are square and
  orthogonal, so every layer but the classifier is injective: the input is
  recovered exactly from any of their outputs."""
  conv1 = conv(1, 9, (3, 3), padding=((1, 1), (1, 1)))
  down = conv(9, 36, (2, 2), strides=2, padding=((0, 0), (0, 0)))
  classifier = linear(576, num_classes)
  for i, layer in enumerate((conv1, down, classifier)):
    set_orthogonal(layer, 10 * seed + 2 * i)
  return NamedSequential(
      [
          ('conv1', conv1),
          ('conv1_lrelu', LeakyReLU(0.5)),
          ('down1', down),
          ('down1_lrelu', LeakyReLU(0.5)),
          ('flatten', Flatten()),
          ('classifier', classifier),
      ]
  )


def array_source(name: str, count: int, labels=None) -> data.ArraySource:
  """``count`` random uint8 images of data set ``name``'s shape, in memory;
  labels ``0, 1, ...`` modulo the classes unless given."""
  spec = data.dataset_info(name)
  rng = np.random.default_rng(0)
  return data.ArraySource(
      spec,
      'train',
      rng.integers(0, 256, (count, *spec.image_shape), dtype=np.uint8),
      (
          np.arange(count) % spec.num_classes if labels is None else labels
      ).astype(np.int32),
  )


def train_batches(source, batch_size: int, **kwargs) -> list[data.Batch]:
  """Epoch 0 of seed 0 of ``source`` for one process, as a list."""
  kwargs = {
      'seed': 0,
      'epoch': 0,
      'process_index': 0,
      'process_count': 1,
      **kwargs,
  }
  return list(data.make_train_iterator(source, batch_size=batch_size, **kwargs))


def eval_batches(source, batch_size: int, **kwargs) -> list[data.Batch]:
  """The eval batches of ``source`` for one process, as a list."""
  kwargs = {'process_index': 0, 'process_count': 1, **kwargs}
  return list(data.make_eval_iterator(source, batch_size=batch_size, **kwargs))
