"""The model catalogue: names, input arguments, registration, and the output
shapes and parameter counts of every model in it."""

import jax.numpy as jnp
import pytest
from flax import nnx

from bort_jax import models
from bort_jax.models import (
    MLP,
    MODEL_NAMES,
    VGG16,
    BortInvertibleCNN,
    InvertibleCNN,
    InvertibleVGG16,
    ResNet18,
    ResNet50,
    VisionTransformer,
    create_model,
)


def conv_params(*layers):
  """Parameters of square convolutions with biases, given as
  ``(kernel_size, in_features, out_features)``."""
  return sum(k * k * fan_in * units + units for k, fan_in, units in layers)


# The classifiers are dense layers on 7x7 maps, counted as 7x7 convolutions.
INVERTIBLE_CNN = conv_params(
    (3, 1, 32), (2, 32, 32), (3, 32, 64), (2, 64, 64), (7, 64, 10)
)
BORT_INVERTIBLE_CNN = conv_params(
    (3, 1, 16), (2, 16, 64), (1, 64, 64), (2, 64, 256), (7, 256, 10)
)

# name -> (num_classes, input shape NHWC, class, parameter count).
# Known figures: torchvision ResNet-50 25,557,032 and VGG-16 138,357,544;
# timm DeiT-S/16 22,050,664; the usual CIFAR ResNet-18 11,173,962.
CASES = {
    'mlp': (10, (2, 28, 28, 1), MLP, 784 * 256 + 256 + 256 * 10 + 10),
    'invertible_cnn': (10, (2, 28, 28, 1), InvertibleCNN, INVERTIBLE_CNN),
    'bort_invertible_cnn': (
        10,
        (2, 28, 28, 1),
        BortInvertibleCNN,
        BORT_INVERTIBLE_CNN,
    ),
    'vgg16': (1000, (2, 224, 224, 3), VGG16, 138_357_544),
    'invertible_vgg16': (
        1000,
        (2, 224, 224, 3),
        InvertibleVGG16,
        (138_357_544 + sum(4 * c * c + c for c in (64, 128, 256, 512, 512))),
    ),
    'resnet18': (10, (2, 32, 32, 3), ResNet18, 11_173_962),
    'resnet50': (1000, (2, 224, 224, 3), ResNet50, 25_557_032),
    'deit_s': (1000, (2, 224, 224, 3), VisionTransformer, 22_050_664),
    'vit_tiny_test': (10, (2, 32, 32, 3), VisionTransformer, None),
}


TEST_MODELS = {'vit_tiny_test'}  # registered by conftest.py


def test_catalogue_names():
  assert set(MODEL_NAMES) == set(CASES) - TEST_MODELS
  assert set(models.registered_model_names()) == set(CASES)


def test_unknown_name_lists_valid_names():
  with pytest.raises(ValueError) as info:
    create_model('resnet1000', num_classes=10, rngs=nnx.Rngs(0))
  for name in models.registered_model_names():
    assert name in str(info.value)


# A small image every model takes: square, a multiple of 32 (VGG), of the
# patch sizes (16, 4) and of 4 (the CNNs); one channel (BortInvertibleCNN's
# stem needs 9 units per input channel).
SMALL_IMAGE = (32, 32, 1)


@pytest.mark.parametrize('name', sorted(CASES))
def test_entry_builds_from_the_data_shape(name, abstract_model, abstract_apply):
  kwargs = models.input_kwargs(name, SMALL_IMAGE)
  model = abstract_model(name, 7, **kwargs)
  assert abstract_apply(model, (2, *SMALL_IMAGE)).shape == (2, 7)


@pytest.mark.parametrize(
    'name, expected',
    [
        ('mlp', {'in_features': 32 * 32 * 1}),
        ('bort_invertible_cnn', {'image_size': 32, 'in_channels': 1}),
        ('vgg16', {'image_size': 32, 'in_channels': 1}),
        ('resnet50', {'in_channels': 1}),
        ('deit_s', {'image_size': 32, 'in_channels': 1}),
    ],
)
def test_input_kwargs(name, expected):
  assert models.input_kwargs(name, SMALL_IMAGE) == expected


def test_builders_are_the_model_classes():
  assert models.model_builder('mlp') is MLP
  assert models.model_builder('resnet18') is ResNet18


def test_register_and_unregister_a_model(fast_rngs):
  def small_mlp(num_classes=10, *, rngs, **kwargs):
    return MLP(
        hidden_features=(8,), num_classes=num_classes, rngs=rngs, **kwargs
    )

  entry = models.register_model(
      'small_mlp', small_mlp, input_kwargs=models.flat_input
  )
  try:
    assert models.model_entry('small_mlp') is entry
    assert 'small_mlp' in models.registered_model_names()
    assert 'small_mlp' not in MODEL_NAMES
    kwargs = models.input_kwargs('small_mlp', (4, 4, 1))
    model = create_model('small_mlp', num_classes=3, rngs=fast_rngs(), **kwargs)
    assert model(jnp.ones((2, 4, 4, 1))).shape == (2, 3)
    with pytest.raises(ValueError, match='already registered'):
      models.register_model('small_mlp', small_mlp)
    models.register_model('small_mlp', MLP, replace=True)
    assert models.model_builder('small_mlp') is MLP
  finally:
    models.unregister_model('small_mlp')
  assert 'small_mlp' not in models.registered_model_names()
  with pytest.raises(ValueError, match="unknown model 'small_mlp'"):
    models.unregister_model('small_mlp')


@pytest.mark.parametrize('name', sorted(CASES))
def test_output_shape_and_param_count(
    name, abstract_model, abstract_apply, count_params
):
  num_classes, input_shape, cls, expected_params = CASES[name]
  model = abstract_model(name, num_classes)
  assert isinstance(model, cls)
  logits = abstract_apply(model, input_shape)
  assert logits.shape == (input_shape[0], num_classes)
  assert logits.dtype == jnp.float32
  if expected_params is not None:
    assert count_params(model) == expected_params


def test_num_classes_and_kwargs_are_forwarded(abstract_model, abstract_apply):
  model = abstract_model(
      'invertible_cnn', 7, in_channels=3, image_size=32, channels=(8, 16, 32)
  )
  assert abstract_apply(model, (2, 32, 32, 3)).shape == (2, 7)
  assert model.get_layer('classifier').in_features == 4 * 4 * 32


def test_cifar_sized_vgg(abstract_model, abstract_apply, count_params):
  model = abstract_model('vgg16', 10, image_size=32, classifier_widths=(512,))
  assert abstract_apply(model, (2, 32, 32, 3)).shape == (2, 10)
  conv_params = 14_714_688  # torchvision VGG-16 features
  assert count_params(model) == conv_params + 512 * 512 + 512 + 512 * 10 + 10


def test_real_forward_small_models(fast_rngs):
  x = jnp.ones((2, 28, 28, 1))
  for name in ('mlp', 'invertible_cnn'):
    model = create_model(name, num_classes=10, rngs=fast_rngs())
    logits = model(x)
    assert logits.shape == (2, 10)
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_bad_configurations_raise(fast_rngs):
  with pytest.raises(ValueError, match='divisible'):
    InvertibleCNN(image_size=30, rngs=fast_rngs())
  with pytest.raises(ValueError, match='multiple of 32'):
    VGG16(image_size=48, rngs=fast_rngs())
  with pytest.raises(ValueError, match='activation'):
    MLP(activation='tanh', rngs=fast_rngs())
  with pytest.raises(ValueError, match='stem'):
    ResNet18(stem='tiny', rngs=fast_rngs())
  with pytest.raises(ValueError, match='patch_size'):
    VisionTransformer(image_size=30, patch_size=4, rngs=fast_rngs())
