r"""How bounded and orthogonal the constrained kernels are, for logging."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

from bort_jax.optimizer import correction
from bort_jax.optimizer import masking

FIGURES = ('relative_error', 'mean_abs_cosine', 'norm_spread')


def matrix_figures(
    matrices: Array, amplitude: correction.Amplitude = 1.0
) -> dict[str, Array]:
  r"""Orthogonality figures of a ``[B, fan_in, out]`` stack (columns = units).

  * ``relative_error``: :math:`\lVert G - aI\rVert_F / \lVert aI\rVert_F` with
    :math:`G` the Gram matrix on the smaller side (:math:`M^\top M` when
    ``out <= fan_in``, else :math:`M M^\top`, the only one that can reach
    :math:`aI`), averaged over the ``B`` matrices.
  * ``mean_abs_cosine``: mean :math:`|\cos|` between distinct output units.
  * ``norm_spread``: std / mean of the output units' norms (0: all bounded
    to the same norm).
  """
  matrices = matrices.astype(correction.compute_dtype(matrices.dtype))
  n, d = matrices.shape[-2:]
  a = correction.resolve_amplitude(matrices, amplitude)
  small = min(n, d)
  side = matrices if d <= n else jnp.swapaxes(matrices, -1, -2)
  gram = jnp.einsum(
      'bij,bik->bjk', side, side, precision=jax.lax.Precision.HIGHEST
  )
  target = a * jnp.eye(small, dtype=gram.dtype)
  relative = jnp.sqrt(jnp.sum(jnp.square(gram - target), axis=(-2, -1))) / (
      a[..., 0, 0] * jnp.sqrt(small)
  )

  unit_norms = jnp.sqrt(jnp.sum(jnp.square(matrices), axis=-2))
  units = matrices / jnp.maximum(
      unit_norms[:, None, :], jnp.finfo(matrices.dtype).tiny
  )
  cosines = jnp.einsum(
      'bij,bik->bjk', units, units, precision=jax.lax.Precision.HIGHEST
  )
  off_diagonal = jnp.sum(jnp.abs(cosines), axis=(-2, -1)) - jnp.trace(
      jnp.abs(cosines), axis1=-2, axis2=-1
  )
  mean_abs_cosine = off_diagonal / max(d * (d - 1), 1)
  spread = jnp.std(unit_norms, axis=-1) / jnp.mean(unit_norms, axis=-1)
  return {
      'relative_error': jnp.mean(relative),
      'mean_abs_cosine': jnp.mean(mean_abs_cosine),
      'norm_spread': jnp.mean(spread),
  }


def orthogonality_report(
    params,
    *,
    amplitude: correction.Amplitude = 1.0,
    mask: masking.MaskOrFn | None = None,
    dimension_numbers: masking.DimensionNumbersOrFn | None = None,
) -> dict[str, dict[str, Array]]:
  r"""Per-kernel orthogonality figures; jittable, no host synchronisation.

  Args:
    params: parameter pytree.
    amplitude: the ``a`` the kernels are driven to (or ``"adaptive"``).
    mask: leaves to report on, as the optimizer's ``mask`` (default:
      :func:`default_mask`, every kernel). Pass the optimizer's own mask, the
      same object, so that the report covers the kernels Bort constrains: a
      classifier left out of the Bort term (``kernels_except('^head/')``) is
      free, far from orthogonal, and would dominate the figures.
    dimension_numbers: how kernels are read (default as in
      :func:`add_bort_correction`).

  Returns:
    ``{path: {'relative_error', 'mean_abs_cosine', 'norm_spread'}}`` of scalar
    arrays, see :func:`matrix_figures`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from bort_jax.optimizer.masking import kernels_except
    >>> from bort_jax import orthogonality_report
    >>> q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (8, 4)))
    >>> params = {'dense': {'kernel': q}, 'head': {'kernel': jnp.ones((4, 2))}}
    >>> mask = kernels_except('^head/')  # the optimizer's mask, given once
    >>> report = orthogonality_report(params, mask=mask)
    >>> list(report), float(report['dense/kernel']['relative_error']) < 1e-5
    (['dense/kernel'], True)
  """
  correction.check_amplitude(amplitude)
  leaves, _, selected = masking.select_leaves(params, mask, dimension_numbers)
  matrices = masking.selected_matrices(leaves, selected)
  return {
      s.path: matrix_figures(m, amplitude) for s, m in zip(selected, matrices)
  }


def summarize_report(report: dict[str, dict[str, Array]]) -> dict[str, Array]:
  """Mean and max of each figure over the kernels of a report (for logs).

  Returns:
    ``{'relative_error/mean': ..., 'relative_error/max': ..., ...}``; NaN for
    an empty report.
  """
  summary = {}
  for figure in FIGURES:
    values = (
        jnp.stack([kernel[figure] for kernel in report.values()])
        if report
        else (jnp.full((1,), jnp.nan))
    )
    summary[f'{figure}/mean'] = jnp.mean(values)
    summary[f'{figure}/max'] = jnp.max(values)
  return summary
