r"""Layer inverses and the backtracking map of an invertible model.

A Bort-trained layer has (nearly) bounded, orthogonal weight vectors, so its
input is recovered from its output with the *transposed* weights. This module
implements the layer-by-layer approximate inverse of the Bort paper (see
``docs/bort.md`` §5) for every layer type an invertible
:class:`~bort_jax.models.layers.NamedSequential` may hold, and
:func:`reconstruct`, which maps the output of any chosen layer back to input
space (the *backtracking map* :math:`g` of the saliency algorithm).

Notation (torch orientation): a layer's weight matrix :math:`W` has one row
:math:`w_c` per output unit, fan-in columns. In Flax the matrix is
``kernel.reshape(-1, out)``, i.e. :math:`W^\top`.

* **Dense** :math:`y = W x + b`:
  :math:`\hat x = W^\top D^{-1} (y - b)` with :math:`D` a diagonal scaling
  (see *scaling* below).
* **Conv** (any stride, padding, kernel dilation): subtract the bias, scale
  channel :math:`c` by :math:`1/D_c`, multiply every spatial position by
  :math:`W^\top` (one patch estimate per output position), fold the patches
  back onto the image (col2im, computed as the linear transpose of the
  convolution) and divide every pixel by the number of patches that cover it
  (pixels no patch covers come back as 0). With
  :math:`W^\top W = a I` this is exactly the pseudo-inverse of the whole
  convolution operator :math:`A`: :math:`A^\top A = a\,\mathrm{diag}(\text{count})`,
  so :math:`A^+ = \mathrm{diag}(\text{count})^{-1} A^\top / a`. With
  :math:`W W^\top = a I` and non-overlapping patches it is again :math:`A^+`.
* **LeakyReLU** (slope :math:`s > 0`): exact,
  :math:`\max(y, 0) + \min(y, 0) / s`. **ReLU**: pass-through (what was cut is
  lost).
* **Max/average pooling**: the patches are filled with the pooled value and
  folded back like a convolution's (nearest-neighbour upsampling for
  non-overlapping windows; the pseudo-inverse of average pooling).
* **Flatten**: reshape back. **Dropout**: identity (eval mode).
* **BatchNorm, residual additions, attention**: no inverse; asking for one
  raises a ``ValueError``.

*Scaling* :math:`D`. ``'row'`` (the paper's procedure) divides unit
:math:`c` by :math:`\lVert w_c\rVert^2`; with mutually orthogonal rows
(:math:`W W^\top` diagonal, only possible when the layer has at most as many
units as its fan-in) :math:`W^\top D^{-1}` is the pseudo-inverse
:math:`W^\top (W W^\top)^{-1}`. An *overcomplete* layer (more units than
fan-in, e.g. the first 3x3 convolution of an MNIST CNN: 9 inputs, 32 units)
cannot have orthogonal rows; Bort drives its *columns* to be orthogonal,
:math:`W^\top W = a I` (every singular value :math:`\sqrt a`), and then the
pseudo-inverse is :math:`W^\top / a`. ``'frame'`` uses that single factor,
estimated as the mean squared singular value
:math:`a = \lVert W\rVert_F^2 / \min(\text{units}, \text{fan-in})`.
``'auto'`` (the default, our choice) uses ``'row'`` for layers with
``units <= fan_in`` and ``'frame'`` for overcomplete ones, so that both are
the pseudo-inverse under the Bort constraint. Every function here is pure,
jittable and batched over a leading axis.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from flax import nnx
  >>> from bort_jax.models import create_model
  >>> model = create_model('invertible_cnn', num_classes=10, rngs=nnx.Rngs(0))
  >>> x = jnp.zeros((2, 28, 28, 1))
  >>> z = model.forward_to(x, 'down2_lrelu')
  >>> reconstruct(model, z, 'down2_lrelu', (28, 28, 1)).shape
  (2, 28, 28, 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Union

import jax
import jax.numpy as jnp
from jax import lax
from flax import nnx

from bort_jax.models.layers import (
  AvgPool,
  Flatten,
  LeakyReLU,
  MaxPool,
  NamedSequential,
  ReLU,
)

__all__ = [
  'SCALINGS',
  'conv_inverse',
  'dense_inverse',
  'flatten_inverse',
  'invertible_layer_names',
  'layer_input_shapes',
  'layer_inverse',
  'leaky_relu_inverse',
  'pool_inverse',
  'reconstruct',
  'reconstruct_all',
  'relu_inverse',
  'unit_scales',
]

Scaling = Literal['auto', 'row', 'frame']
Padding = Union[str, int, Sequence[tuple[int, int]]]

#: The accepted values of the ``scaling`` argument.
SCALINGS: tuple[str, ...] = ('auto', 'row', 'frame')
_HIGHEST = lax.Precision.HIGHEST


def _check_scaling(scaling: str) -> None:
  if scaling not in SCALINGS:
    raise ValueError(f'unknown scaling {scaling!r}; valid scalings: {list(SCALINGS)}')


def unit_scales(
  matrix: jax.Array, scaling: Scaling = 'auto', eps: float = 1e-8
) -> jax.Array:
  r"""The per-unit divisors :math:`D_c` of the transposed-weight inverse.

  Args:
    matrix: ``[fan_in, units]`` (Flax orientation: columns are output units).
    scaling: ``'row'`` (:math:`\lVert w_c\rVert^2`), ``'frame'``
      (:math:`\lVert W\rVert_F^2 / \min(\text{units}, \text{fan-in})` for every
      unit) or ``'auto'`` (``'row'`` if ``units <= fan_in`` else ``'frame'``).
    eps: added to the divisors.

  Returns:
    ``[units]`` positive divisors.

  Example:
    >>> import jax.numpy as jnp
    >>> unit_scales(jnp.array([[3.0, 0.0], [0.0, 1.0]]), 'row')
    Array([9., 1.], dtype=float32)
    >>> unit_scales(jnp.array([[3.0, 0.0], [0.0, 1.0]]), 'frame')
    Array([5., 5.], dtype=float32)
  """
  _check_scaling(scaling)
  fan_in, units = matrix.shape
  if scaling == 'auto':
    scaling = 'row' if units <= fan_in else 'frame'
  squares = jnp.square(matrix)
  if scaling == 'row':
    return jnp.sum(squares, axis=0) + eps
  return jnp.full((units,), jnp.sum(squares) / min(fan_in, units) + eps, matrix.dtype)


def dense_inverse(
  y: jax.Array,
  kernel: jax.Array,
  bias: jax.Array | None = None,
  *,
  scaling: Scaling = 'auto',
  eps: float = 1e-8,
) -> jax.Array:
  r"""Inverts ``y = x @ kernel + bias``: :math:`\hat x = W^\top D^{-1}(y - b)`.

  Args:
    y: ``[..., units]`` layer outputs.
    kernel: Flax kernel ``[fan_in, units]``.
    bias: ``[units]`` or ``None``.
    scaling: see :func:`unit_scales`.
    eps: added to the divisors.

  Returns:
    ``[..., fan_in]`` input estimates; the exact input when the kernel's
    columns (units) are orthogonal and ``x`` lies in their span.

  Example:
    >>> import jax.numpy as jnp
    >>> k = jnp.array([[0.0, 2.0], [1.0, 0.0]])  # orthogonal units
    >>> dense_inverse(jnp.array([3.0, 4.0]) @ k, k)
    Array([3., 4.], dtype=float32)
  """
  if y.shape[-1] != kernel.shape[-1]:
    raise ValueError(
      f'dense_inverse: y has {y.shape[-1]} features but the kernel '
      f'{kernel.shape} has {kernel.shape[-1]} output units'
    )
  if bias is not None:
    y = y - bias
  y = y / unit_scales(kernel, scaling, eps)
  return jnp.matmul(y, kernel.T, precision=_HIGHEST)


def _pair(value: int | Sequence[int], what: str) -> tuple[int, int]:
  if isinstance(value, int):
    return (value, value)
  pair = tuple(int(v) for v in value)
  if len(pair) != 2:
    raise ValueError(f'{what} must be an int or a pair of ints, got {value!r}')
  return pair


def _explicit_padding(
  padding: Padding,
  spatial: tuple[int, int],
  window: tuple[int, int],
  strides: tuple[int, int],
  dilation: tuple[int, int] = (1, 1),
) -> tuple[tuple[int, int], tuple[int, int]]:
  """``(low, high)`` pairs for 'SAME'/'VALID', an int or explicit pairs."""
  if isinstance(padding, str):
    if padding.upper() not in ('SAME', 'VALID'):
      raise ValueError(
        f'padding {padding!r} has no inverse here; use SAME, VALID or explicit '
        '(low, high) pairs'
      )
    effective = tuple((w - 1) * d + 1 for w, d in zip(window, dilation))
    return tuple(lax.padtype_to_pads(spatial, effective, strides, padding.upper()))
  if isinstance(padding, int):
    return ((padding, padding), (padding, padding))
  pads = tuple(
    (int(pair), int(pair)) if isinstance(pair, int) else tuple(int(p) for p in pair)
    for pair in padding)
  if len(pads) != 2 or any(len(p) != 2 for p in pads):
    raise ValueError(f'padding must be two (low, high) pairs, got {padding!r}')
  return pads


def _fold(
  forward, y: jax.Array, x_shape: tuple[int, ...], what: str
) -> jax.Array:
  """``forward^T(y) / forward^T(1)``-style fold: transpose of a linear map.

  ``forward`` maps ``[N, H, W, C_in]`` to something of ``y``'s shape.
  """
  x_struct = jax.ShapeDtypeStruct(x_shape, y.dtype)
  out = jax.eval_shape(forward, x_struct)
  if out.shape != y.shape:
    raise ValueError(
      f'{what}: an input of shape {x_shape[1:]} gives outputs of shape '
      f'{out.shape[1:]}, but the given outputs have shape {y.shape[1:]}'
    )
  (x,) = jax.linear_transpose(forward, x_struct)(y)
  return x


def conv_inverse(
  y: jax.Array,
  kernel: jax.Array,
  bias: jax.Array | None = None,
  *,
  input_shape: Sequence[int],
  strides: int | Sequence[int] = 1,
  padding: Padding = 'VALID',
  kernel_dilation: int | Sequence[int] = 1,
  scaling: Scaling = 'auto',
  eps: float = 1e-8,
) -> jax.Array:
  r"""Approximate inverse of a 2D convolution (NHWC), by transposed filters.

  .. math::
    \hat x = \mathrm{diag}(\text{count})^{-1}\,
      \mathrm{col2im}\bigl(W^\top D^{-1} (y_p - b)\bigr)_p

  where :math:`y_p` is the output at position :math:`p` and ``count`` the
  number of patches covering each pixel (0-count pixels stay 0).

  Args:
    y: ``[N, H', W', C_out]`` convolution outputs.
    kernel: Flax kernel ``[kh, kw, C_in, C_out]``.
    bias: ``[C_out]`` or ``None``.
    input_shape: ``(H, W)`` or ``(H, W, C_in)``: the spatial size of the
      convolution's input (several input sizes can give the same output
      size when the stride is above 1).
    strides: the convolution's strides.
    padding: ``'SAME'``, ``'VALID'``, an int, or ``((lo, hi), (lo, hi))``.
    kernel_dilation: the convolution's kernel dilation.
    scaling: see :func:`unit_scales`.
    eps: added to the divisors.

  Returns:
    ``[N, H, W, C_in]``: the pseudo-inverse of the convolution applied to
    ``y - b`` when the filters are orthogonal (see the module docstring).

  Raises:
    ValueError: if ``y`` does not have the shape the convolution gives for
      ``input_shape``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (4, 4)))
    >>> kernel = q.reshape(2, 2, 1, 4)  # 2x2 patches, 4 orthonormal filters
    >>> x = jax.random.normal(jax.random.key(1), (1, 6, 6, 1))
    >>> y = jax.lax.conv_general_dilated(x, kernel, (1, 1), 'VALID',
    ...     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    >>> x_hat = conv_inverse(y, kernel, input_shape=(6, 6), strides=1)
    >>> bool(jnp.allclose(x_hat, x, atol=1e-5))
    True
  """
  if kernel.ndim != 4:
    raise ValueError(f'conv_inverse expects a [kh, kw, C_in, C_out] kernel, got {kernel.shape}')
  kh, kw, c_in, c_out = kernel.shape
  if y.ndim != 4 or y.shape[-1] != c_out:
    raise ValueError(
      f'conv_inverse: expected outputs [N, H, W, {c_out}] for a kernel '
      f'{kernel.shape}, got shape {y.shape}'
    )
  input_shape = tuple(int(s) for s in input_shape)
  if len(input_shape) == 3 and input_shape[-1] != c_in:
    raise ValueError(
      f'conv_inverse: input_shape {input_shape} has {input_shape[-1]} channels '
      f'but the kernel {kernel.shape} expects {c_in}'
    )
  if len(input_shape) not in (2, 3):
    raise ValueError(f'input_shape must be (H, W) or (H, W, C), got {input_shape}')
  spatial = input_shape[:2]
  strides = _pair(strides, 'strides')
  dilation = _pair(kernel_dilation, 'kernel_dilation')
  pads = _explicit_padding(padding, spatial, (kh, kw), strides, dilation)

  def conv(x, k):
    return lax.conv_general_dilated(
      x, k, strides, pads, rhs_dilation=dilation,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=_HIGHEST)

  if bias is not None:
    y = y - bias
  y = y / unit_scales(kernel.reshape(-1, c_out), scaling, eps)
  n = y.shape[0]
  summed = _fold(lambda x: conv(x, kernel), y, (n, *spatial, c_in), 'conv_inverse')
  ones_kernel = jnp.ones((kh, kw, 1, 1), y.dtype)
  count = _fold(
    lambda x: conv(x, ones_kernel), jnp.ones((1, *y.shape[1:3], 1), y.dtype),
    (1, *spatial, 1), 'conv_inverse')
  return summed / jnp.maximum(count, 1.0)


def pool_inverse(
  y: jax.Array,
  *,
  input_shape: Sequence[int],
  window: int | Sequence[int] = 2,
  strides: int | Sequence[int] | None = None,
  padding: Padding = 'VALID',
) -> jax.Array:
  r"""Inverse of max or average pooling: fill each window, fold, average.

  Every pooled value is copied to all pixels of its window and each pixel
  is the mean of the values of the windows covering it; for
  non-overlapping windows this is nearest-neighbour upsampling (the
  pseudo-inverse of average pooling). Pixels no window covers are 0.

  Args:
    y: ``[N, H', W', C]`` pooled maps.
    input_shape: ``(H, W)`` or ``(H, W, C)`` of the pooling's input.
    window: pooling window.
    strides: pooling strides (default: ``window``).
    padding: ``'SAME'``, ``'VALID'``, an int, or ``((lo, hi), (lo, hi))``.

  Returns:
    ``[N, H, W, C]``.

  Example:
    >>> import jax.numpy as jnp
    >>> pool_inverse(jnp.array([[[[1.0], [2.0]]]]), input_shape=(2, 4))[0, ..., 0]
    Array([[1., 1., 2., 2.],
           [1., 1., 2., 2.]], dtype=float32)
  """
  if y.ndim != 4:
    raise ValueError(f'pool_inverse expects [N, H, W, C] maps, got shape {y.shape}')
  window = _pair(window, 'window')
  strides = window if strides is None else _pair(strides, 'strides')
  input_shape = tuple(int(s) for s in input_shape)
  spatial = input_shape[:2]
  pads = _explicit_padding(padding, spatial, window, strides)

  def sum_pool(x):
    return lax.reduce_window(
      x, jnp.zeros((), x.dtype), lax.add, (1, *window, 1), (1, *strides, 1),
      ((0, 0), *pads, (0, 0)))

  n, c = y.shape[0], y.shape[-1]
  summed = _fold(sum_pool, y, (n, *spatial, c), 'pool_inverse')
  count = _fold(sum_pool, jnp.ones((1, *y.shape[1:3], 1), y.dtype), (1, *spatial, 1),
                'pool_inverse')
  return summed / jnp.maximum(count, 1.0)


def leaky_relu_inverse(y: jax.Array, slope: float) -> jax.Array:
  r"""Exact inverse of LeakyReLU: :math:`\max(y, 0) + \min(y, 0) / s`.

  Args:
    y: outputs.
    slope: the negative slope :math:`s` (``> 0``; ``0`` is a ReLU and passes
      ``y`` through).

  Returns:
    The inputs, same shape as ``y``.

  Example:
    >>> import jax.numpy as jnp
    >>> leaky_relu_inverse(jnp.array([-1.0, 3.0]), 0.5)
    Array([-2.,  3.], dtype=float32)
  """
  if slope < 0:
    raise ValueError(f'a LeakyReLU with negative slope {slope} is not invertible')
  if slope == 0:
    return relu_inverse(y)
  return jnp.where(y >= 0, y, y / jnp.asarray(slope, y.dtype))


def relu_inverse(y: jax.Array) -> jax.Array:
  """The ReLU "inverse": pass-through (negative inputs are lost).

  Example:
    >>> import jax.numpy as jnp
    >>> relu_inverse(jnp.array([0.0, 3.0]))
    Array([0., 3.], dtype=float32)
  """
  return y


def flatten_inverse(y: jax.Array, input_shape: Sequence[int]) -> jax.Array:
  """Reshapes ``[N, D]`` back to ``[N, *input_shape]``.

  Example:
    >>> import jax.numpy as jnp
    >>> flatten_inverse(jnp.zeros((2, 12)), (2, 2, 3)).shape
    (2, 2, 2, 3)
  """
  input_shape = tuple(int(s) for s in input_shape)
  size = 1
  for s in input_shape:
    size *= s
  if y.ndim != 2 or y.shape[-1] != size:
    raise ValueError(
      f'flatten_inverse: cannot reshape outputs of shape {y.shape} to '
      f'[N, *{input_shape}] ({size} features per example)'
    )
  return y.reshape(y.shape[0], *input_shape)


def _value(variable: Any) -> jax.Array | None:
  return None if variable is None else variable[...]


def _no_inverse_message(kind: str) -> str:
  return (
    f'{kind} has no inverse (the Bort backtracking map inverts Dense, Conv, '
    'LeakyReLU, ReLU, pooling, Flatten and Dropout layers only)'
  )


def layer_inverse(
  layer: nnx.Module,
  y: jax.Array,
  input_shape: Sequence[int],
  *,
  scaling: Scaling = 'auto',
  eps: float = 1e-8,
) -> jax.Array:
  """Applies the approximate inverse of one layer of an invertible model.

  Args:
    layer: an ``nnx.Linear``, ``nnx.Conv``, ``LeakyReLU``, ``ReLU``,
      ``MaxPool``, ``AvgPool``, ``Flatten`` or ``nnx.Dropout``.
    y: the layer's outputs ``[N, ...]``.
    input_shape: the shape of one example of the layer's input (no batch axis).
    scaling: see :func:`unit_scales` (Dense and Conv only).
    eps: added to the divisors.

  Returns:
    ``[N, *input_shape]`` input estimates.

  Raises:
    ValueError: for a layer type with no inverse (e.g. ``nnx.BatchNorm``) or
      a convolution with feature groups, input dilation or circular padding.

  Example:
    >>> import jax.numpy as jnp
    >>> from bort_jax.models.layers import LeakyReLU
    >>> layer_inverse(LeakyReLU(0.5), jnp.array([[-1.0, 2.0]]), (2,))
    Array([[-2.,  2.]], dtype=float32)
  """
  input_shape = tuple(int(s) for s in input_shape)
  if isinstance(layer, nnx.Linear):
    return dense_inverse(y, _value(layer.kernel), _value(layer.bias), scaling=scaling, eps=eps)
  if isinstance(layer, nnx.Conv):
    if layer.feature_group_count != 1:
      raise ValueError(_no_inverse_message(
        f'a grouped convolution (feature_group_count={layer.feature_group_count})'))
    if layer.input_dilation not in (1, None, (1, 1)):
      raise ValueError(_no_inverse_message('an input-dilated convolution'))
    if len(input_shape) != 3:
      raise ValueError(f'only 2D convolutions are supported, input shape {input_shape}')
    return conv_inverse(
      y, _value(layer.kernel), _value(layer.bias), input_shape=input_shape,
      strides=layer.strides or 1, padding=layer.padding,
      kernel_dilation=layer.kernel_dilation or 1, scaling=scaling, eps=eps)
  if isinstance(layer, LeakyReLU):
    return leaky_relu_inverse(y, layer.slope)
  if isinstance(layer, (ReLU, nnx.Dropout)):
    return y
  if isinstance(layer, (MaxPool, AvgPool)):
    return pool_inverse(y, input_shape=input_shape, window=layer.window,
                        strides=layer.strides, padding=layer.padding)
  if isinstance(layer, Flatten):
    return flatten_inverse(y, input_shape)
  raise ValueError(_no_inverse_message(f'a {type(layer).__name__} layer'))


def _check_sequence(model: Any) -> None:
  """Raises a ValueError saying why ``model`` cannot be backtracked."""
  if isinstance(model, NamedSequential):
    return
  kinds = sorted({
    type(node).__name__
    for _, node in nnx.iter_graph(model)
    if isinstance(node, (nnx.BatchNorm, nnx.LayerNorm, nnx.MultiHeadAttention))
  })
  detail = f' It contains {", ".join(kinds)} layers, which have no inverse' if kinds else ''
  raise ValueError(
    f'{type(model).__name__} is not an invertible layer sequence; reconstruct '
    'needs a NamedSequential model (MLP, InvertibleCNN, VGG16/InvertibleVGG16).'
    f'{detail}; residual additions have no inverse either.'
  )


def layer_input_shapes(
  model: NamedSequential, input_shape: Sequence[int], dtype: Any = jnp.float32
) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
  """Per-example ``(input shape, output shape)`` of every layer, abstractly.

  Args:
    model: an invertible model.
    input_shape: one example's shape (no batch axis), e.g. ``(28, 28, 1)``.
    dtype: input dtype.

  Returns:
    One ``(in_shape, out_shape)`` pair per layer, in layer order.

  Raises:
    ValueError: if the model cannot run on inputs of that shape.

  Example:
    >>> from flax import nnx
    >>> from bort_jax.models import create_model
    >>> model = create_model('mlp', num_classes=10, rngs=nnx.Rngs(0))
    >>> layer_input_shapes(model, (28, 28, 1))[1]
    ((784,), (256,))
  """
  _check_sequence(model)
  input_shape = tuple(int(s) for s in input_shape)

  def run(m, x):
    shapes = []
    for layer in m.layers:
      shapes.append(x)
      x = layer(x)
    shapes.append(x)
    return shapes

  try:
    structs = jax.eval_shape(run, model, jax.ShapeDtypeStruct((1, *input_shape), dtype))
  except (TypeError, ValueError) as e:
    raise ValueError(
      f'inputs of shape {input_shape} do not fit {type(model).__name__}: {e}'
    ) from e
  shapes = [s.shape[1:] for s in structs]
  return list(zip(shapes[:-1], shapes[1:]))


def invertible_layer_names(model: Any) -> tuple[str, ...]:
  """Names of the layers :func:`reconstruct` can start from (all of them).

  Raises:
    ValueError: if the model is not an invertible layer sequence.
  """
  _check_sequence(model)
  for name, layer in zip(model.layer_names, model.layers):
    if not isinstance(layer, (nnx.Linear, nnx.Conv, LeakyReLU, ReLU, MaxPool,
                              AvgPool, Flatten, nnx.Dropout)):
      raise ValueError(_no_inverse_message(f'layer {name!r} ({type(layer).__name__})'))
  return tuple(model.layer_names)


def reconstruct(
  model: NamedSequential,
  representation: jax.Array,
  layer_name: str,
  input_shape: Sequence[int],
  *,
  scaling: Scaling = 'auto',
  eps: float = 1e-8,
) -> jax.Array:
  r"""Maps the output of layer ``layer_name`` back to input space.

  Applies :func:`layer_inverse` from ``layer_name`` down to the first layer:
  :math:`\hat x = g(z) = f_1^{-1}(\cdots f_L^{-1}(z))`. This is the
  backtracking map of the Bort paper. Jittable with the model as an argument
  (``layer_name``, ``input_shape`` and ``scaling`` static).

  Args:
    model: an invertible model (``MLP``, ``InvertibleCNN``, ``VGG16``,
      ``InvertibleVGG16`` or any ``NamedSequential``), in eval mode if it has
      dropout.
    representation: ``[N, ...]``, the output of layer ``layer_name`` for a
      batch of ``N`` inputs (or any array of that shape).
    layer_name: one of ``model.layer_names``.
    input_shape: one input example's shape, e.g. ``(28, 28, 1)``.
    scaling: see :func:`unit_scales`.
    eps: added to the divisors.

  Returns:
    ``[N, *input_shape]`` reconstructions.

  Raises:
    ValueError: if the model is not an invertible sequence (e.g. a ResNet:
      BatchNorm, residual additions), the layer name does not exist,
      ``input_shape`` does not fit the model, or ``representation`` does not
      have that layer's output shape.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from bort_jax.models import create_model
    >>> model = create_model('mlp', num_classes=10, rngs=nnx.Rngs(0))
    >>> x = jnp.ones((3, 28, 28, 1))
    >>> x_hat = reconstruct(model, model.forward_to(x, 'fc1'), 'fc1', (28, 28, 1))
    >>> x_hat.shape
    (3, 28, 28, 1)
  """
  _check_scaling(scaling)
  invertible_layer_names(model)
  stop = model.layer_index(layer_name)
  shapes = layer_input_shapes(model, input_shape, representation.dtype)
  expected = shapes[stop][1]
  if representation.ndim != len(expected) + 1 or representation.shape[1:] != expected:
    raise ValueError(
      f'representation has shape {tuple(representation.shape)}, but layer '
      f'{layer_name!r} outputs [N, *{expected}] for inputs of shape '
      f'{tuple(input_shape)}'
    )
  y = representation
  for i in range(stop, -1, -1):
    y = layer_inverse(model.layers[i], y, shapes[i][0], scaling=scaling, eps=eps)
  return y


def reconstruct_all(
  model: NamedSequential,
  x: jax.Array,
  layer_names: Sequence[str] | None = None,
  *,
  scaling: Scaling = 'auto',
  eps: float = 1e-8,
) -> dict[str, jax.Array]:
  """Runs ``x`` forward and reconstructs it from each layer in ``layer_names``.

  Args:
    model: an invertible model.
    x: ``[N, *input_shape]`` inputs.
    layer_names: layers to reconstruct from (default: all).
    scaling: see :func:`unit_scales`.
    eps: added to the divisors.

  Returns:
    ``{layer_name: [N, *input_shape] reconstruction}`` in layer order.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from bort_jax.models import create_model
    >>> model = create_model('mlp', num_classes=10, rngs=nnx.Rngs(0))
    >>> sorted(reconstruct_all(model, jnp.ones((1, 784)), ['fc1', 'fc1_relu']))
    ['fc1', 'fc1_relu']
  """
  invertible_layer_names(model)
  names = model.layer_names if layer_names is None else tuple(layer_names)
  for name in names:
    model.layer_index(name)
  outputs = model.intermediates(x)
  return {
    name: reconstruct(model, outputs[name], name, x.shape[1:], scaling=scaling, eps=eps)
    for name in model.layer_names if name in names
  }
