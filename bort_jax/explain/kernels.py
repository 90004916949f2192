r"""Linear-algebra kernels of the backtracking map: one layer's inverse.

These are the numerical pieces the primitive rules of
:mod:`~bort_jax.explain.rules` call, usable alone on arrays: the Bort
paper's transposed-weight inverses (:func:`dense_inverse`,
:func:`conv_inverse`), their least-squares counterparts (:func:`dense_pinv`,
:func:`conv_pinv`, :func:`least_squares_inverse`), pooling
(:func:`pool_inverse`) and the exact inverses of activations and
normalisation.

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
* **BatchNorm** in eval mode (running statistics): the affine map it is,
  inverted exactly (:func:`batch_norm_inverse`).

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
  >>> import jax.numpy as jnp
  >>> from bort_jax.explain.kernels import dense_inverse
  >>> k = jnp.array([[0.0, 2.0], [1.0, 0.0]])  # Orthogonal units.
  >>> dense_inverse(jnp.array([3.0, 4.0]) @ k, k)
  Array([3., 4.], dtype=float32)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    'METHODS',
    'PINV_MAXITER',
    'PINV_TOL',
    'SCALINGS',
    'batch_norm_inverse',
    'check_method',
    'check_scaling',
    'conv_inverse',
    'conv_pinv',
    'dense_inverse',
    'dense_pinv',
    'flatten_inverse',
    'leaky_relu_inverse',
    'least_squares_inverse',
    'pool_inverse',
    'relu_inverse',
    'unit_scales',
]

Scaling = Literal['auto', 'row', 'frame']
Padding = str | int | Sequence[tuple[int, int]]

#: The accepted values of the ``scaling`` argument.
SCALINGS: tuple[str, ...] = ('auto', 'row', 'frame')
Method = Literal['transpose', 'pinv']
#: The accepted values of the ``method`` argument.
METHODS: tuple[str, ...] = ('transpose', 'pinv')
#: Default conjugate-gradient iterations and relative tolerance of ``'pinv'``.
PINV_MAXITER, PINV_TOL = 100, 1e-6
_HIGHEST = lax.Precision.HIGHEST


def check_scaling(scaling: str) -> None:
  if scaling not in SCALINGS:
    raise ValueError(
        f'unknown scaling {scaling!r}; valid scalings: {list(SCALINGS)}'
    )


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
    >>> from bort_jax.explain.kernels import unit_scales
    >>> unit_scales(jnp.array([[3.0, 0.0], [0.0, 1.0]]), 'row')
    Array([9., 1.], dtype=float32)
    >>> unit_scales(jnp.array([[3.0, 0.0], [0.0, 1.0]]), 'frame')
    Array([5., 5.], dtype=float32)
  """
  check_scaling(scaling)
  fan_in, units = matrix.shape
  if scaling == 'auto':
    scaling = 'row' if units <= fan_in else 'frame'
  squares = jnp.square(matrix)
  if scaling == 'row':
    return jnp.sum(squares, axis=0) + eps
  return jnp.full(
      (units,), jnp.sum(squares) / min(fan_in, units) + eps, matrix.dtype
  )


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
    >>> from bort_jax.explain.kernels import dense_inverse
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
    return tuple(
        lax.padtype_to_pads(spatial, effective, strides, padding.upper())
    )
  if isinstance(padding, int):
    return ((padding, padding), (padding, padding))
  pads = tuple(
      (int(pair), int(pair))
      if isinstance(pair, int)
      else tuple(int(p) for p in pair)
      for pair in padding
  )
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
    >>> from bort_jax.explain.kernels import conv_inverse
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
    raise ValueError(
        f'conv_inverse expects a [kh, kw, C_in, C_out] kernel, got {kernel.shape}'
    )
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
    raise ValueError(
        f'input_shape must be (H, W) or (H, W, C), got {input_shape}'
    )
  spatial = input_shape[:2]
  strides = _pair(strides, 'strides')
  dilation = _pair(kernel_dilation, 'kernel_dilation')
  pads = _explicit_padding(padding, spatial, (kh, kw), strides, dilation)

  def conv(x, k):
    return lax.conv_general_dilated(
        x,
        k,
        strides,
        pads,
        rhs_dilation=dilation,
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
        precision=_HIGHEST,
    )

  if bias is not None:
    y = y - bias
  y = y / unit_scales(kernel.reshape(-1, c_out), scaling, eps)
  n = y.shape[0]
  summed = _fold(
      lambda x: conv(x, kernel), y, (n, *spatial, c_in), 'conv_inverse'
  )
  ones_kernel = jnp.ones((kh, kw, 1, 1), y.dtype)
  count = _fold(
      lambda x: conv(x, ones_kernel),
      jnp.ones((1, *y.shape[1:3], 1), y.dtype),
      (1, *spatial, 1),
      'conv_inverse',
  )
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
    >>> from bort_jax.explain.kernels import pool_inverse
    >>> pool_inverse(jnp.array([[[[1.0], [2.0]]]]), input_shape=(2, 4))[0, ..., 0]
    Array([[1., 1., 2., 2.],
           [1., 1., 2., 2.]], dtype=float32)
  """
  if y.ndim != 4:
    raise ValueError(
        f'pool_inverse expects [N, H, W, C] maps, got shape {y.shape}'
    )
  window = _pair(window, 'window')
  strides = window if strides is None else _pair(strides, 'strides')
  input_shape = tuple(int(s) for s in input_shape)
  spatial = input_shape[:2]
  pads = _explicit_padding(padding, spatial, window, strides)

  def sum_pool(x):
    return lax.reduce_window(
        x,
        np.zeros((), x.dtype),  # Concrete: lax picks the window sum.
        lax.add,
        (1, *window, 1),
        (1, *strides, 1),
        ((0, 0), *pads, (0, 0)),
    )

  n, c = y.shape[0], y.shape[-1]
  summed = _fold(sum_pool, y, (n, *spatial, c), 'pool_inverse')
  count = _fold(
      sum_pool,
      jnp.ones((1, *y.shape[1:3], 1), y.dtype),
      (1, *spatial, 1),
      'pool_inverse',
  )
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
    >>> from bort_jax.explain.kernels import leaky_relu_inverse
    >>> leaky_relu_inverse(jnp.array([-1.0, 3.0]), 0.5)
    Array([-2.,  3.], dtype=float32)
  """
  if slope < 0:
    raise ValueError(
        f'a LeakyReLU with negative slope {slope} is not invertible'
    )
  if slope == 0:
    return relu_inverse(y)
  return jnp.where(y >= 0, y, y / jnp.asarray(slope, y.dtype))


def relu_inverse(y: jax.Array) -> jax.Array:
  """The ReLU "inverse": pass-through (negative inputs are lost).

  Example:
    >>> import jax.numpy as jnp
    >>> from bort_jax.explain.kernels import relu_inverse
    >>> relu_inverse(jnp.array([0.0, 3.0]))
    Array([0., 3.], dtype=float32)
  """
  return y


def flatten_inverse(y: jax.Array, input_shape: Sequence[int]) -> jax.Array:
  """Reshapes ``[N, D]`` back to ``[N, *input_shape]``.

  Example:
    >>> import jax.numpy as jnp
    >>> from bort_jax.explain.kernels import flatten_inverse
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


def _check_output_shape(
    forward, y: jax.Array, x_shape: tuple[int, ...], what: str
) -> None:
  """Raises unless ``forward`` maps ``x_shape`` inputs to ``y``'s shape."""
  out = jax.eval_shape(forward, jax.ShapeDtypeStruct(x_shape, y.dtype))
  if out.shape != y.shape:
    raise ValueError(
        f'{what}: an input of shape {x_shape[1:]} gives outputs of shape '
        f'{out.shape[1:]}, but the given outputs have shape {y.shape[1:]}'
    )


def least_squares_inverse(
    forward: Callable[[jax.Array], jax.Array],
    y: jax.Array,
    input_shape: Sequence[int],
    *,
    maxiter: int = PINV_MAXITER,
    tol: float = PINV_TOL,
) -> jax.Array:
  r"""Least-squares inverse of an affine map, by conjugate gradients.

  For :math:`f(x) = A x + b` (``forward``, batched over a leading axis and
  acting on each example alone), solves the normal equations

  .. math::
    A^\top A\, x = A^\top (y - b)

  for every example with ``jax.scipy.sparse.linalg.cg`` from :math:`x_0 = 0`:
  :math:`b = f(0)`, :math:`A` is the linearisation of ``forward`` at 0
  (``jax.linearize``) and :math:`A^\top` its transpose
  (``jax.linear_transpose``); no matrix is formed. The result is
  :math:`A^+ (y - b)`: the input itself when :math:`A` is injective, and the
  minimum-norm least-squares solution otherwise (CG started at 0 stays in
  the row space of :math:`A`). Jittable; examples are solved in parallel
  with ``vmap``.

  Args:
    forward: an affine map ``[N, *input_shape] -> [N, ...]`` (e.g. a
      convolution with its bias).
    y: ``[N, ...]`` outputs.
    input_shape: one example's input shape (no batch axis).
    maxiter: the most CG iterations (default 100). In exact arithmetic CG
      ends after at most as many iterations as :math:`A^\top A` has distinct
      eigenvalues; a well-conditioned convolution needs a few dozen.
    tol: relative residual at which CG stops,
      :math:`\lVert A^\top A x - A^\top(y - b)\rVert \le \mathrm{tol}\,
      \lVert A^\top (y - b)\rVert` (default 1e-6, near float32 accuracy).

  Returns:
    ``[N, *input_shape]``.

  Raises:
    ValueError: if ``forward`` does not map inputs of ``input_shape`` to
      outputs of ``y``'s shape, or ``maxiter``/``tol`` are not positive.

  Example:
    >>> import jax.numpy as jnp
    >>> from bort_jax.explain.kernels import least_squares_inverse
    >>> forward = lambda x: jnp.concatenate([x, 2.0 * x], axis=-1) + 1.0
    >>> least_squares_inverse(forward, forward(jnp.array([[1.0, -2.0]])), (2,))
    Array([[ 1., -2.]], dtype=float32)
  """
  if int(maxiter) < 1:
    raise ValueError(f'maxiter must be a positive int, got {maxiter}')
  if not tol > 0:
    raise ValueError(f'tol must be positive, got {tol}')
  input_shape = tuple(int(s) for s in input_shape)
  _check_output_shape(
      forward, y, (y.shape[0], *input_shape), 'least_squares_inverse'
  )
  zeros = jnp.zeros((1, *input_shape), y.dtype)
  offset, linear = jax.linearize(forward, zeros)
  transpose = jax.linear_transpose(linear, zeros)

  def normal_operator(x):
    (x,) = transpose(linear(x))
    return x

  def solve(y_n):
    (rhs,) = transpose(y_n[None] - offset)
    x, _ = jax.scipy.sparse.linalg.cg(
        normal_operator, rhs, tol=tol, atol=0.0, maxiter=int(maxiter)
    )
    return x[0]

  return jax.vmap(solve)(y)


def dense_pinv(
    y: jax.Array, kernel: jax.Array, bias: jax.Array | None = None
) -> jax.Array:
  r"""Exact least-squares inverse of ``y = x @ kernel + bias``.

  :math:`\hat x = (y - b)\, K^+` with :math:`K^+` the Moore-Penrose
  pseudo-inverse of the ``[fan_in, units]`` kernel (``jnp.linalg.pinv``, by
  SVD): the input itself when the kernel has full row rank (at least as many
  units as inputs), the minimum-norm solution otherwise.

  Args:
    y: ``[..., units]`` layer outputs.
    kernel: Flax kernel ``[fan_in, units]``.
    bias: ``[units]`` or ``None``.

  Returns:
    ``[..., fan_in]``.

  Example:
    >>> import jax.numpy as jnp
    >>> from bort_jax.explain.kernels import dense_pinv
    >>> k = jnp.array([[1.0, 1.0, 0.0], [0.0, 1.0, 3.0]])  # Not orthogonal.
    >>> b = jnp.full((3,), 0.5)
    >>> x_hat = dense_pinv(jnp.array([[2.0, -1.0]]) @ k + b, k, b)
    >>> x_hat.round(4)
    Array([[ 2., -1.]], dtype=float32)
  """
  if y.shape[-1] != kernel.shape[-1]:
    raise ValueError(
        f'dense_pinv: y has {y.shape[-1]} features but the kernel '
        f'{kernel.shape} '
        f'has {kernel.shape[-1]} output units'
    )
  if bias is not None:
    y = y - bias
  return jnp.matmul(y, jnp.linalg.pinv(kernel), precision=_HIGHEST)


def conv_pinv(
    y: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None = None,
    *,
    input_shape: Sequence[int],
    strides: int | Sequence[int] = 1,
    padding: Padding = 'VALID',
    kernel_dilation: int | Sequence[int] = 1,
    input_dilation: int | Sequence[int] = 1,
    feature_group_count: int = 1,
    maxiter: int = PINV_MAXITER,
    tol: float = PINV_TOL,
) -> jax.Array:
  r"""Least-squares inverse of a 2D convolution (NHWC), by conjugate gradients.

  :math:`\hat x = A^+ (y - b)` with :math:`A` the whole convolution operator
  (not patch by patch): see :func:`least_squares_inverse`. Exact whenever
  the convolution is injective, whatever its filters, e.g. a random
  stride-1 3x3 convolution from 1 to 8 channels, which
  :func:`conv_inverse` only approximates (its filters are not orthogonal
  and its patches are wide: 9 inputs, 8 units).

  Args:
    y: ``[N, H', W', C_out]`` convolution outputs.
    kernel: Flax kernel ``[kh, kw, C_in / groups, C_out]``.
    bias: ``[C_out]`` or ``None``.
    input_shape: ``(H, W)`` or ``(H, W, C_in)`` of the convolution's input.
    strides, padding, kernel_dilation: as in :func:`conv_inverse`.
    input_dilation: the convolution's input dilation.
    feature_group_count: the convolution's feature groups.
    maxiter, tol: see :func:`least_squares_inverse`.

  Returns:
    ``[N, H, W, C_in]``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from bort_jax.explain.kernels import conv_pinv
    >>> kernel = jax.random.normal(jax.random.key(0), (3, 3, 1, 8))
    >>> x = jax.random.normal(jax.random.key(1), (1, 6, 6, 1))
    >>> y = jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME',
    ...     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    >>> x_hat = conv_pinv(y, kernel, input_shape=(6, 6), padding='SAME')
    >>> bool(jnp.allclose(x_hat, x, atol=1e-4))
    True
  """
  if kernel.ndim != 4:
    raise ValueError(
        f'conv_pinv expects a [kh, kw, C_in, C_out] kernel, got {kernel.shape}'
    )
  kh, kw, group_in, c_out = kernel.shape
  c_in = group_in * int(feature_group_count)
  if y.ndim != 4 or y.shape[-1] != c_out:
    raise ValueError(
        f'conv_pinv: expected outputs [N, H, W, {c_out}] for a kernel '
        f'{kernel.shape}, '
        f'got shape {y.shape}'
    )
  input_shape = tuple(int(s) for s in input_shape)
  if len(input_shape) not in (2, 3):
    raise ValueError(
        f'input_shape must be (H, W) or (H, W, C), got {input_shape}'
    )
  if len(input_shape) == 3 and input_shape[-1] != c_in:
    raise ValueError(
        f'conv_pinv: input_shape {input_shape} has {input_shape[-1]} channels '
        f'but the kernel {kernel.shape} with {feature_group_count} groups '
        f'expects {c_in}'
    )
  spatial = input_shape[:2]
  strides = _pair(strides, 'strides')
  dilation = _pair(kernel_dilation, 'kernel_dilation')
  lhs_dilation = _pair(input_dilation, 'input_dilation')
  dilated = tuple((s - 1) * d + 1 for s, d in zip(spatial, lhs_dilation))
  pads = _explicit_padding(padding, dilated, (kh, kw), strides, dilation)

  def conv(x):
    return lax.conv_general_dilated(
        x,
        kernel,
        strides,
        pads,
        lhs_dilation=lhs_dilation,
        rhs_dilation=dilation,
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
        feature_group_count=int(feature_group_count),
        precision=_HIGHEST,
    )

  _check_output_shape(conv, y, (y.shape[0], *spatial, c_in), 'conv_pinv')
  if bias is not None:
    y = y - bias
  return least_squares_inverse(
      conv, y, (*spatial, c_in), maxiter=maxiter, tol=tol
  )


def batch_norm_inverse(
    y: jax.Array,
    mean: jax.Array,
    var: jax.Array,
    scale: jax.Array | None = None,
    bias: jax.Array | None = None,
    *,
    epsilon: float = 1e-5,
    axis: int | Sequence[int] = -1,
) -> jax.Array:
  r"""Exact inverse of batch normalisation with fixed (running) statistics.

  In eval mode a BatchNorm is the affine map
  :math:`y = (x - \mu)\,\gamma / \sqrt{\sigma^2 + \epsilon} + \beta`, so

  .. math::
    x = (y - \beta) / \gamma \cdot \sqrt{\sigma^2 + \epsilon} + \mu.

  Args:
    y: outputs.
    mean, var: the running statistics :math:`\mu, \sigma^2`, shaped like the
      feature axes of ``y``.
    scale, bias: :math:`\gamma, \beta` or ``None`` (1 and 0).
    epsilon: :math:`\epsilon`.
    axis: the feature axis (or axes) of ``y``.

  Returns:
    The inputs, same shape as ``y``.

  Example:
    >>> import jax.numpy as jnp
    >>> from bort_jax.explain.kernels import batch_norm_inverse
    >>> batch_norm_inverse(jnp.array([[1.0, 1.0]]), jnp.array([0.0, 2.0]),
    ...                    jnp.array([4.0, 1.0]), epsilon=0.0)
    Array([[2., 3.]], dtype=float32)
  """
  axes = (axis,) if isinstance(axis, int) else tuple(axis)
  axes = tuple(a % y.ndim for a in axes)
  shape = [y.shape[a] if a in axes else 1 for a in range(y.ndim)]
  feature_shape = tuple(y.shape[a] for a in sorted(axes))

  def broadcast(v):
    v = jnp.asarray(v)
    if v.size != math.prod(feature_shape):
      raise ValueError(
          f'batch_norm_inverse: statistics of shape {v.shape} do not match the '
          f'feature axes {axes} of outputs of shape {y.shape}'
      )
    return v.reshape(shape)

  if bias is not None:
    y = y - broadcast(bias)
  std = jnp.sqrt(broadcast(var) + epsilon)
  if scale is not None:
    std = std / broadcast(scale)
  return y * std + broadcast(mean)


def check_method(method: str) -> None:
  """Raises a ``ValueError`` unless ``method`` is one of :data:`METHODS`."""
  if method not in METHODS:
    raise ValueError(
        f'unknown method {method!r}; valid methods: {list(METHODS)}'
    )
