"""Layers left out of the Bort term by name: names -> kernel-path patterns."""

import re

import jax
import pytest
from flax import nnx

import bort_jax
from bort_jax import models
from bort_jax.optimizer.masking import path_string


def excluded_kernels(model, patterns):
  """Kernel paths the default mask selects but ``kernels_except`` does not."""
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  every = bort_jax.default_mask(params)
  kept = bort_jax.kernels_except(*patterns)(params)
  flat_every = jax.tree_util.tree_flatten_with_path(every)[0]
  flat_kept = jax.tree.leaves(kept)
  return {
      path_string(path)
      for (path, chosen), still in zip(flat_every, flat_kept)
      if chosen and not still
  }


@pytest.mark.parametrize(
    'name, num_classes, exclude, expected',
    [
        ('mlp', 10, ('classifier',), {'layers/3/kernel'}),
        (
            'mlp',
            10,
            ('fc1', 'classifier'),
            {'layers/1/kernel', 'layers/3/kernel'},
        ),
        ('bort_invertible_cnn', 10, ('classifier',), {'layers/9/kernel'}),
        ('invertible_cnn', 10, ('down1',), {'layers/2/kernel'}),
        ('resnet18', 10, ('classifier',), {'classifier/kernel'}),
        ('vit_tiny_test', 10, ('head',), {'head/kernel'}),
        (
            'vit_tiny_test',
            10,
            ('blocks/0/attention',),
            {
                f'blocks/0/attention/{p}/kernel'
                for p in ('query', 'key', 'value', 'out')
            },
        ),
    ],
)
def test_a_layer_name_excludes_exactly_its_kernels(
    name, num_classes, exclude, expected, abstract_model
):
  model = abstract_model(name, num_classes)
  patterns = models.exclusion_patterns(model, exclude)
  assert len(patterns) == len(exclude)
  assert excluded_kernels(model, patterns) == expected


def test_the_classifier_name_equals_the_old_classifier_pattern(abstract_model):
  model = abstract_model('bort_invertible_cnn', 10)
  params = nnx.state(model, nnx.Param)
  by_name = bort_jax.kernels_except(
      *models.exclusion_patterns(model, ('classifier',))
  )(params)
  by_pattern = bort_jax.kernels_except(
      models.BORT_INVERTIBLE_CNN_CLASSIFIER_PATTERN
  )(params)
  assert jax.tree.leaves(by_name) == jax.tree.leaves(by_pattern)


@pytest.mark.parametrize(
    'name, entry',
    [
        ('bort_invertible_cnn', '^layers/9/kernel$'),
        ('vit_tiny_test', '^head/'),
        ('resnet18', 'conv'),  # a plain word matching kernel paths
    ],
)
def test_a_regular_expression_is_kept(name, entry, abstract_model):
  model = abstract_model(name, 10)
  assert models.exclusion_patterns(model, (entry,)) == (entry,)


@pytest.mark.parametrize(
    'name, listed',
    [
        ('bort_invertible_cnn', ['conv1', 'down2_lrelu', 'classifier']),
        ('resnet18', ['classifier', 'stem_conv', 'stages']),
    ],
)
def test_an_unknown_name_is_an_error_listing_the_layers(
    name, listed, abstract_model
):
  model = abstract_model(name, 10)
  with pytest.raises(ValueError, match="has no layer 'clasifier'") as info:
    models.exclusion_patterns(model, ('classifier', 'clasifier'))
  for layer in listed:
    assert repr(layer) in str(info.value)


def test_a_layer_without_a_kernel_is_an_error(abstract_model):
  model = abstract_model('bort_invertible_cnn', 10)
  with pytest.raises(ValueError, match=re.escape("layer 'flatten'")):
    models.exclusion_patterns(model, ('flatten',))


def test_layer_paths_of_a_named_sequence_and_of_a_module_tree(abstract_model):
  paths = models.layer_paths(abstract_model('mlp', 10))
  assert paths == {
      'flatten': 'layers/0',
      'fc1': 'layers/1',
      'fc1_relu': 'layers/2',
      'classifier': 'layers/3',
  }
  paths = models.layer_paths(abstract_model('vit_tiny_test', 10))
  assert paths['head'] == 'head'
  assert paths['blocks/1/mlp/fc2'] == 'blocks/1/mlp/fc2'


@pytest.mark.parametrize(
    'entry, is_name',
    [
        ('classifier', True),
        ('blocks/0/attention', True),
        ('^layers/9/kernel$', False),
        ('^head/', False),
        ('fc[12]', False),
    ],
)
def test_names_and_regular_expressions_are_told_apart(entry, is_name):
  assert models.looks_like_layer_name(entry) is is_name
