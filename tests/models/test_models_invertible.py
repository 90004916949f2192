"""Structure of the invertible models: named layers an explainer can walk."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from testing import INVERTIBLE_CNN_LAYER_NAMES

from bort_jax.models import (
    SEQUENCE_LAYER_TYPES,
    LeakyReLU,
    MaxPool,
    NamedSequential,
    ReLU,
    create_model,
)

# label -> (registry name, kwargs, input shape). VGGs at CIFAR size.
SEQUENTIAL_CASES = {
    'mlp': ('mlp', {}, (2, 28, 28, 1)),
    'mlp_leaky_deep': (
        'mlp',
        dict(hidden_features=(64, 32), activation='leaky_relu'),
        (2, 28, 28, 1),
    ),
    'invertible_cnn': ('invertible_cnn', {}, (2, 28, 28, 1)),
    'invertible_cnn_cifar': (
        'invertible_cnn',
        dict(in_channels=3, image_size=32),
        (2, 32, 32, 3),
    ),
    'invertible_vgg16_cifar': (
        'invertible_vgg16',
        dict(image_size=32, classifier_widths=(32,)),
        (2, 32, 32, 3),
    ),
    'vgg16_cifar': (
        'vgg16',
        dict(image_size=32, classifier_widths=(32,)),
        (2, 32, 32, 3),
    ),
}

# Fully invertible: LeakyReLU and strided convolutions only.
INVERTIBLE = {
    'mlp_leaky_deep',
    'invertible_cnn',
    'invertible_cnn_cifar',
    'invertible_vgg16_cifar',
}


@pytest.fixture(scope='module')
def build(fast_rngs):
  """``build(label)``: one real model per case, built once, in eval mode."""
  models = {}

  def get(label):
    if label not in models:
      name, kwargs, _ = SEQUENTIAL_CASES[label]
      models[label] = create_model(
          name, num_classes=10, rngs=fast_rngs(), **kwargs
      )
    models[label].eval()
    return models[label]

  return get


def example_input(label):
  shape = SEQUENTIAL_CASES[label][2]
  return jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)


def test_default_layer_names(build):
  assert build('mlp').layer_names == (
      'flatten',
      'fc1',
      'fc1_relu',
      'classifier',
  )
  assert build('mlp_leaky_deep').layer_names == (
      'flatten',
      'fc1',
      'fc1_lrelu',
      'fc2',
      'fc2_lrelu',
      'classifier',
  )
  assert build('invertible_cnn').layer_names == INVERTIBLE_CNN_LAYER_NAMES


def test_vgg_layer_names(abstract_model):
  vgg = abstract_model('vgg16', 1000)
  inv = abstract_model('invertible_vgg16', 1000)
  assert vgg.layer_names[:5] == (
      'conv1_1',
      'conv1_1_relu',
      'conv1_2',
      'conv1_2_relu',
      'pool1',
  )
  assert vgg.layer_names[-8:] == (
      'flatten',
      'fc6',
      'fc6_relu',
      'fc6_dropout',
      'fc7',
      'fc7_relu',
      'fc7_dropout',
      'classifier',
  )
  assert inv.layer_names[:5] == (
      'conv1_1',
      'conv1_1_lrelu',
      'conv1_2',
      'conv1_2_lrelu',
      'down1',
  )
  convs = [
      n for n in vgg.layer_names if n.startswith('conv') and '_relu' not in n
  ]
  assert len(convs) == 13
  assert [n for n in inv.layer_names if n.startswith('down')] == [
      f'down{i}' for i in range(1, 6)
  ]
  assert len(inv.layer_names) == len(vgg.layer_names)


@pytest.mark.parametrize('label', sorted(SEQUENTIAL_CASES))
def test_structure_named_layers_without_batchnorm(label, build):
  model = build(label)
  assert isinstance(model, NamedSequential)
  assert (
      len(set(model.layer_names)) == len(model.layer_names) == len(model.layers)
  )
  for layer in model.layers:
    assert isinstance(layer, SEQUENCE_LAYER_TYPES)
  # No BatchNorm anywhere, hence no batch statistics.
  assert not any(
      isinstance(m, nnx.BatchNorm) for _, m in nnx.iter_modules(model)
  )
  assert jax.tree.leaves(nnx.state(model, nnx.BatchStat)) == []
  assert model.layer_names[-1] == 'classifier'
  for layer in model.layers:
    if isinstance(layer, nnx.Conv):
      # Explicit stride and (low, high) padding pairs, so an inverse can read them.
      assert isinstance(layer.strides, tuple) and len(layer.strides) == 2
      assert isinstance(layer.padding, tuple) and len(layer.padding) == 2
  if label in INVERTIBLE:
    assert not any(isinstance(layer, (ReLU, MaxPool)) for layer in model.layers)
    slopes = {
        layer.slope for layer in model.layers if isinstance(layer, LeakyReLU)
    }
    assert slopes == {0.5}


@pytest.mark.parametrize('label', ['invertible_cnn', 'invertible_vgg16_cifar'])
def test_downsampling_is_strided_2x2_conv(label, build):
  model = build(label)
  downs = [
      model.get_layer(n)
      for n in model.layer_names
      if n.startswith('down') and '_' not in n
  ]
  assert downs
  for conv in downs:
    assert isinstance(conv, nnx.Conv)
    assert conv.kernel_size == (2, 2)
    assert conv.strides == (2, 2)
    assert conv.in_features == conv.out_features


@pytest.mark.parametrize('label', sorted(SEQUENTIAL_CASES))
def test_forward_to_matches_prefix_of_call(label, build):
  model = build(label)
  x = example_input(label)
  logits = model(x)
  assert logits.shape == (2, 10)
  outputs = model.intermediates(x)
  assert tuple(outputs) == model.layer_names
  np.testing.assert_allclose(
      outputs['classifier'], logits, rtol=1e-5, atol=1e-5
  )
  h = x
  for name, layer in zip(model.layer_names, model.layers):
    h = layer(h)
    np.testing.assert_allclose(outputs[name], h, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        model.forward_to(x, name), h, rtol=1e-5, atol=1e-5
    )


def test_invertible_cnn_shapes_and_values(build):
  """Each layer's output, recomputed from the previous one with plain
  ``lax``/``jnp`` (3x3 convolutions padded by 1, 2x2 stride-2 convolutions
  unpadded, LeakyReLU with slope 0.5, a dense classifier)."""
  model = build('invertible_cnn')
  x = example_input('invertible_cnn')
  outputs = model.intermediates(x)
  shapes = {name: out.shape for name, out in outputs.items()}
  assert shapes['conv1'] == (2, 28, 28, 32)
  assert shapes['down1'] == (2, 14, 14, 32)
  assert shapes['conv2'] == (2, 14, 14, 64)
  assert shapes['down2_lrelu'] == (2, 7, 7, 64)
  assert shapes['flatten'] == (2, 7 * 7 * 64)

  def conv(inputs, name, strides, padding):
    layer = model.get_layer(name)
    out = jax.lax.conv_general_dilated(
        inputs,
        layer.kernel[...],
        strides,
        padding,
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
        precision='highest',
    )
    return out + layer.bias[...]

  def leaky_relu(y):
    return jnp.where(y >= 0, y, 0.5 * y)

  expected = {}
  previous = x
  for name, strides, padding in [
      ('conv1', (1, 1), ((1, 1), (1, 1))),
      ('down1', (2, 2), 'VALID'),
      ('conv2', (1, 1), ((1, 1), (1, 1))),
      ('down2', (2, 2), 'VALID'),
  ]:
    expected[name] = conv(previous, name, strides, padding)
    expected[f'{name}_lrelu'] = previous = leaky_relu(expected[name])
  expected['flatten'] = previous.reshape(2, -1)
  classifier = model.get_layer('classifier')
  expected['classifier'] = (
      expected['flatten'] @ classifier.kernel[...] + classifier.bias[...]
  )
  assert set(expected) == set(outputs)
  for name, want in expected.items():
    np.testing.assert_allclose(
        outputs[name], want, rtol=1e-4, atol=1e-5, err_msg=name
    )
  np.testing.assert_array_equal(outputs['classifier'], model(x))


def test_forward_to_unknown_layer_names_valid_layers(build):
  model = build('invertible_cnn')
  with pytest.raises(ValueError) as info:
    model.forward_to(example_input('invertible_cnn'), 'pool1')
  assert 'down1' in str(info.value) and 'classifier' in str(info.value)


def test_vgg_dropout_follows_train_and_eval(build):
  model = build('vgg16_cifar')
  x = example_input('vgg16_cifar')
  assert all(
      isinstance(model.get_layer(n), nnx.Dropout) for n in ('fc6_dropout',)
  )
  np.testing.assert_allclose(model(x), model(x))  # eval mode: deterministic
  model.train()
  try:
    assert not np.allclose(
        model.forward_to(x, 'fc6_dropout'), model.forward_to(x, 'fc6_dropout')
    )
  finally:
    model.eval()
