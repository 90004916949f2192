r"""The Bort correction term :math:`\Delta(W)` for every mode.

In PyTorch orientation (rows of ``W`` are output units) the ICLR method is

.. math::
  \Delta(W) = \nabla_W \tfrac14 \lVert W W^\top - a I \rVert_F^2 = W W^\top W - a W.

Flax kernels hold output units in their *columns*: ``M = W^T``. Every function
here works on ``M`` (shape ``[..., fan_in, out]``) and returns
:math:`\Delta` in the same orientation, which is the transpose of the table
below evaluated on ``W``:

============  ======================================  ==========================
mode          :math:`\Delta(W)` (torch orientation)     on ``M`` (Flax)
============  ======================================  ==========================
l2-full       :math:`W W^\top W - a W`                 :math:`M M^\top M - a M`
l2-row        :math:`\mathrm{diag}(W W^\top) W - a W`  column norms of ``M``
l2-col        :math:`W \mathrm{diag}(W^\top W) - a W`  row norms of ``M``
l1-fullrow    :math:`\mathrm{sign}(W W^\top - a I) W`   ``M sign(MᵀM − aI)``
l1-fullcol    :math:`W \mathrm{sign}(W^\top W - a I)`   ``sign(MMᵀ − aI) M``
l1-row        :math:`(\mathrm{sign}(W W^\top - aI)\odot I) W`   diagonal only
l1-col        :math:`W (\mathrm{sign}(W^\top W - aI)\odot I)`   diagonal only
============  ======================================  ==========================

``l2-full`` forms its Gram matrix on the smaller side, since
:math:`M M^\top M = M (M^\top M) = (M M^\top) M`.
"""

from __future__ import annotations

import math
from typing import Literal, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

try:
  from jax.core import Tracer
except ImportError:  # pragma: no cover - older/newer JAX layouts
  from jax._src.core import Tracer

from bort_jax.optimizer import layout
from bort_jax.optimizer import placement

MODES = (
    'l2-full',
    'l2-row',
    'l2-col',
    'l1-fullrow',
    'l1-fullcol',
    'l1-row',
    'l1-col',
)
ADAPTIVE = 'adaptive'

Mode = Literal[
    'l2-full',
    'l2-row',
    'l2-col',
    'l1-fullrow',
    'l1-fullcol',
    'l1-row',
    'l1-col',
]
Amplitude = Union[float, Array, Literal['adaptive']]


def check_mode(mode: str) -> None:
  """Raises ``ValueError`` unless ``mode`` is one of :data:`MODES`."""
  if mode not in MODES:
    raise ValueError(
        f'Unknown Bort mode {mode!r}; valid modes are {", ".join(MODES)}.'
    )


def concrete_scalar(value, name: str) -> float | None:
  """``value`` as a Python float, or ``None`` when it is traced (unknown yet).

  Any real scalar is accepted: Python and NumPy numbers and 0-d JAX arrays of
  any integer or floating dtype, ``bfloat16`` and ``float16`` included (what
  ``optax.inject_hyperparams`` makes of a hyperparameter for a bf16 model).

  Raises:
    ValueError: ``value`` is not a real scalar, or is NaN or infinite.
  """
  if isinstance(value, Tracer):
    return None
  dtype = getattr(value, 'dtype', None)
  if dtype is None:
    dtype = np.asarray(value).dtype
  if (
      isinstance(value, (bool, np.bool_))
      or np.ndim(value) != 0
      or not (
          jnp.issubdtype(dtype, jnp.integer)
          or jnp.issubdtype(dtype, jnp.floating)
      )
  ):
    raise ValueError(f'{name} must be a real scalar, got {value!r}.')
  number = float(value)
  if not math.isfinite(number):
    raise ValueError(f'{name} must be finite, got {value!r}.')
  return number


def check_amplitude(amplitude: Amplitude) -> None:
  """Raises ``ValueError`` unless ``amplitude`` is positive or ``"adaptive"``.

  Traced values (e.g. under ``optax.inject_hyperparams``) cannot be checked and
  are accepted.
  """
  if isinstance(amplitude, str):
    if amplitude != ADAPTIVE:
      raise ValueError(
          f'Unknown amplitude {amplitude!r}: use a positive number or {ADAPTIVE!r}.'
      )
    return
  if amplitude is None:
    raise ValueError(
        f'amplitude must be a positive number or {ADAPTIVE!r}, got None.'
    )
  value = concrete_scalar(amplitude, 'amplitude')
  if value is not None and not value > 0:
    raise ValueError(
        f'amplitude must be positive (or {ADAPTIVE!r}), got {amplitude!r}.'
    )


def check_complex_mode(mode: str, dtype, name: str = 'kernel') -> None:
  """Raises ``ValueError`` for a complex kernel under an ``l1`` mode.

  The ``l2`` modes are gradients of real penalties and have the Hermitian
  form for complex kernels; the ``l1`` modes take the sign of a Gram matrix,
  which has no meaning for a complex Gram matrix.
  """
  if jnp.issubdtype(dtype, jnp.complexfloating) and mode.startswith('l1'):
    raise ValueError(
        f'{name} is complex ({jnp.dtype(dtype)}): mode {mode!r} takes the sign '
        'of a Gram matrix and is defined for real kernels only; use an l2 mode '
        'or leave the kernel out of the mask.'
    )


def _matmul(a: Array, b: Array, precision) -> Array:
  return jnp.matmul(a, b, precision=precision)


def _squared_magnitude(matrices: Array) -> Array:
  """:math:`|m|^2` entrywise, real for real or complex ``matrices``."""
  if jnp.issubdtype(matrices.dtype, jnp.complexfloating):
    return jnp.square(matrices.real) + jnp.square(matrices.imag)
  return jnp.square(matrices)


def _gram(matrices: Array, contract: int, precision) -> Array:
  r"""Gram matrix of a ``[..., n, d]`` stack without forming a transpose.

  ``contract=-2`` gives :math:`M^H M` (``[..., d, d]``), ``contract=-1``
  gives :math:`M M^H` (``[..., n, n]``); :math:`M^\top` for real ``M``. One
  ``dot_general`` contracting the named axis of both operands: XLA reads
  the operands in place, where ``swapaxes`` and a batched matmul would copy
  every kernel into its transpose first.
  """
  batch = tuple(range(matrices.ndim - 2))
  axis = matrices.ndim + contract
  conjugated = (
      jnp.conj(matrices)
      if jnp.issubdtype(matrices.dtype, jnp.complexfloating)
      else matrices
  )
  if contract == -2:  # (M^H M)_jk = sum_i conj(m_ij) m_ik
    lhs, rhs = conjugated, matrices
  else:  # (M M^H)_ik = sum_j m_ij conj(m_kj)
    lhs, rhs = matrices, conjugated
  return jax.lax.dot_general(
      lhs,
      rhs,
      (((axis,), (axis,)), (batch, batch)),
      precision=precision,
  )


def resolve_amplitude(matrices: Array, amplitude: Amplitude) -> Array:
  r"""The amplitude ``a`` for each matrix of a ``[..., fan_in, out]`` stack.

  For ``"adaptive"``, :math:`a = (\frac{1}{d}\sum_j \lVert m_j \rVert_2)^2`, the
  squared mean norm of the output units (columns), computed on device.

  Returns:
    An array broadcastable against ``matrices`` (shape ``[..., 1, 1]``).
  """
  if isinstance(amplitude, str):
    unit_norms = jnp.sqrt(jnp.sum(_squared_magnitude(matrices), axis=-2))
    return jnp.square(jnp.mean(unit_norms, axis=-1))[..., None, None].astype(
        matrices.dtype
    )
  return jnp.asarray(amplitude, matrices.dtype).reshape((1,) * matrices.ndim)


def matrix_correction(
    matrices: Array,
    *,
    amplitude: Amplitude = 1.0,
    mode: Mode = 'l2-full',
    precision: jax.lax.PrecisionLike = None,
) -> Array:
  r""":math:`\Delta` for a stack of matrices whose columns are output units.

  For complex matrices the ``l2`` modes use the conjugate transpose:
  ``l2-full`` is :math:`M(M^H M) - aM`, the steepest-ascent direction of
  :math:`\tfrac14\lVert M^H M - aI\rVert_F^2` (``jax.grad`` of that penalty
  returns its complex conjugate); ``l2-row``/``l2-col`` use :math:`|m|^2`.
  The ``l1`` modes are defined for real matrices only.

  Args:
    matrices: array ``[..., fan_in, out]``; leading axes are independent
      matrices.
    amplitude: positive float ``a`` or ``"adaptive"``.
    mode: one of :data:`MODES`.
    precision: matmul precision passed to :func:`jax.numpy.matmul`.

  Returns:
    :math:`\Delta(M)` with the shape and dtype of ``matrices``.

  Raises:
    ValueError: an unknown mode, or an ``l1`` mode on complex matrices.

  Example:
    >>> import jax.numpy as jnp
    >>> from bort_jax import matrix_correction
    >>> m = jnp.eye(3, 2) * 2.0
    >>> matrix_correction(m)  # M (MᵀM) − M = 4M − M = 3M
    Array([[6., 0.],
           [0., 6.],
           [0., 0.]], dtype=float32)
  """
  check_mode(mode)
  check_complex_mode(mode, matrices.dtype, 'matrices')
  n, d = matrices.shape[-2:]
  a = resolve_amplitude(matrices, amplitude)

  if mode == 'l2-full':
    if d <= n:
      cubic = _matmul(matrices, _gram(matrices, -2, precision), precision)
    else:
      cubic = _matmul(_gram(matrices, -1, precision), matrices, precision)
    return cubic - a * matrices
  if mode in ('l2-row', 'l1-row'):
    excess = jnp.sum(_squared_magnitude(matrices), axis=-2, keepdims=True) - a
    return matrices * (excess if mode == 'l2-row' else jnp.sign(excess))
  if mode in ('l2-col', 'l1-col'):
    excess = jnp.sum(_squared_magnitude(matrices), axis=-1, keepdims=True) - a
    return matrices * (excess if mode == 'l2-col' else jnp.sign(excess))
  if mode == 'l1-fullrow':
    gram = _gram(matrices, -2, precision)
    return _matmul(
        matrices, jnp.sign(gram - a * jnp.eye(d, dtype=gram.dtype)), precision
    )
  # l1-fullcol
  gram = _gram(matrices, -1, precision)
  return _matmul(
      jnp.sign(gram - a * jnp.eye(n, dtype=gram.dtype)), matrices, precision
  )


def compute_dtype(dtype) -> jnp.dtype:
  """At least float32: low-precision kernels are corrected in float32."""
  return jnp.promote_types(dtype, jnp.float32)


def bort_correction(
    kernel: Array,
    *,
    amplitude: Amplitude = 1.0,
    mode: Mode = 'l2-full',
    dimension_numbers: layout.BortDimensionNumbers | None = None,
    precision: jax.lax.PrecisionLike = None,
) -> Array:
  r"""Bort's correction :math:`\Delta` for one kernel, in the kernel's layout.

  The kernel is read as matrices ``M = kernel.reshape(-1, out)`` (output units
  in the columns, see :class:`BortDimensionNumbers`), :math:`\Delta(M)` is
  computed in at least float32 and returned in the kernel's shape and dtype.
  One constraint-only step is ``kernel - lr * gamma * bort_correction(kernel)``.

  Args:
    kernel: a Dense/Conv/attention kernel, output axis last unless
      ``dimension_numbers`` say otherwise.
    amplitude: target squared norm ``a`` of each output unit (a positive
      number), or ``"adaptive"`` for the squared mean norm of the output units.
    mode: one of :data:`MODES` (``"l2-full"`` is the ICLR method).
    dimension_numbers: which axes are output units / independent matrices;
      defaults to ``BortDimensionNumbers()`` (last axis is the output).
    precision: matmul precision.

  Returns:
    :math:`\Delta` with ``kernel``'s shape and dtype.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from bort_jax import bort_correction
    >>> kernel = jax.random.normal(jax.random.key(0), (3, 3, 8, 16)) * 0.1
    >>> step = jax.jit(lambda kernel: kernel - 0.5 * bort_correction(kernel))
    >>> for _ in range(50):
    ...   kernel = step(kernel)
    >>> m = kernel.reshape(-1, 16)
    >>> bool(jnp.allclose(m.T @ m, jnp.eye(16), atol=1e-4))
    True
  """
  check_mode(mode)
  check_amplitude(amplitude)
  if dimension_numbers is None:
    dimension_numbers = layout.BortDimensionNumbers()
  layout.check_dimension_numbers(dimension_numbers)
  layout.normalized_axes(kernel.shape, dimension_numbers)
  check_complex_mode(mode, kernel.dtype)

  def correct(kernels):
    matrices = layout.to_matrices(
        kernels[0].astype(compute_dtype(kernel.dtype)), dimension_numbers
    )
    delta = matrix_correction(
        matrices, amplitude=amplitude, mode=mode, precision=precision
    )
    return [
        layout.from_matrices(delta, kernel.shape, dimension_numbers).astype(
            kernel.dtype
        )
    ]

  return placement.on_own_shardings(
      correct, [kernel], [placement.explicit_spec(kernel)]
  )[0]
