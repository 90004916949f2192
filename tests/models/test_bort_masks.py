"""Bort's default mask and dimension numbers on every registered model.

``bort_jax.default_mask`` must select exactly the Dense/Conv/attention kernels
(found here from the module types, independently of the library's rule) and
nothing else: no biases, norm scales, class tokens or position tables.
``bort_jax.default_dimension_numbers`` must read query/key/value kernels
``(in, heads, head_dim)`` with output axes ``(1, 2)`` and every other kernel,
the attention ``out`` kernel ``(heads, head_dim, out)`` included, with the last
axis as output.
"""

import jax
import pytest
from flax import nnx

import bort_jax
from bort_jax import BortDimensionNumbers

# name -> (num_classes, number of kernels Bort constrains by default)
EXPECTED_KERNEL_COUNTS = {
    'mlp': (10, 2),  # fc1, classifier
    'invertible_cnn': (10, 5),  # 2 x (conv, down), classifier
    'vgg16': (1000, 16),  # 13 conv, fc6, fc7, classifier
    'invertible_vgg16': (1000, 21),  # + 5 stride-2 downsampling convs
    'resnet18': (10, 21),  # stem, 16 block convs, 3 shortcuts, classifier
    'resnet50': (1000, 54),  # stem, 48 block convs, 4 shortcuts, classifier
    'deit_s': (1000, 74),  # patch embed, 12 x (q, k, v, out, fc1, fc2), head
    'vit_tiny_test': (10, 14),  # patch embed, 2 x 6, head
}

AFFINE_TYPES = (nnx.Linear, nnx.Conv, nnx.LinearGeneral)
ATTENTION_INPUTS = ('query', 'key', 'value')


def _key_name(entry):
  for attribute in ('key', 'name', 'idx'):
    if hasattr(entry, attribute):
      return getattr(entry, attribute)
  return entry


def flat_leaves(tree):
  """``{path tuple: leaf}`` for a plain or nnx pytree, ``Variable`` unwrapped.

  ``None`` and ``BortDimensionNumbers`` count as leaves; a trailing
  ``.value`` in the path (pure nnx states) is dropped.
  """

  def is_leaf(x):
    return x is None or isinstance(x, (BortDimensionNumbers, nnx.Variable))

  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[
      0
  ]:
    names = [_key_name(entry) for entry in path]
    while names and names[-1] in ('value', 'raw_value'):
      names.pop()
    if isinstance(leaf, nnx.Variable):
      leaf = leaf.get_value()
    flat[tuple(names)] = leaf
  return flat


def expected_kernel_paths(model):
  """Paths of the kernels of every Linear/Conv/attention projection module."""
  paths = set()
  for path, module in nnx.iter_modules(model):
    if isinstance(module, AFFINE_TYPES):
      paths.add(tuple(path) + ('kernel',))
  return paths


def model_and_params(abstract_model, name):
  """The abstract model ``name``, its ``nnx.Param`` state, and that state's
  leaves by path."""
  model = abstract_model(name, EXPECTED_KERNEL_COUNTS[name][0])
  params = nnx.state(model, nnx.Param)
  return model, params, flat_leaves(params)


@pytest.mark.parametrize('name', sorted(EXPECTED_KERNEL_COUNTS))
def test_default_mask_selects_exactly_the_kernels(name, abstract_model):
  model, params, param_leaves = model_and_params(abstract_model, name)
  count = EXPECTED_KERNEL_COUNTS[name][1]
  mask = flat_leaves(bort_jax.default_mask(params))
  assert set(mask) == set(param_leaves)

  selected = {path for path, chosen in mask.items() if chosen}
  assert all(
      isinstance(chosen, bool) or chosen in (0, 1) for chosen in mask.values()
  )
  assert selected == expected_kernel_paths(model)
  assert len(selected) == count
  for path in selected:
    assert path[-1] == 'kernel' and len(param_leaves[path].shape) >= 2
  for path in set(mask) - selected:
    assert path[-1] in ('bias', 'scale', 'cls_token', 'pos_embed'), path


@pytest.mark.parametrize('name', sorted(EXPECTED_KERNEL_COUNTS))
def test_default_dimension_numbers(name, abstract_model):
  model, params, param_leaves = model_and_params(abstract_model, name)
  dims = flat_leaves(bort_jax.default_dimension_numbers(params))
  assert set(dims) == set(param_leaves)
  kernels = expected_kernel_paths(model)
  attention_inputs = attention_outs = 0
  for path, dn in dims.items():
    if path not in kernels:
      assert dn is None, path
      continue
    assert isinstance(dn, BortDimensionNumbers), path
    ndim = len(param_leaves[path].shape)
    output_axes = tuple(a % ndim for a in _axes(dn.output_axis))
    assert _axes(dn.batch_axis) == (), path
    if path[-2] in ATTENTION_INPUTS:
      assert param_leaves[path].shape[1:] == (
          model.blocks[0].attention.num_heads,
          model.blocks[0].attention.head_dim,
      )
      assert output_axes == (1, 2), path
      attention_inputs += 1
    else:
      assert output_axes == (ndim - 1,), path  # (-1,) or, for `out`, (2,)
      attention_outs += path[-2] == 'out'
  if name in ('deit_s', 'vit_tiny_test'):
    assert attention_inputs == 3 * len(model.blocks)
    assert attention_outs == len(model.blocks)
  else:
    assert attention_inputs == attention_outs == 0


def _axes(axes):
  if axes is None:
    return ()
  if isinstance(axes, int):
    return (axes,)
  return tuple(axes)
