"""Finiteness checks of parameter trees and models.

:func:`all_finite` reduces a whole pytree to one boolean on device (one
compiled program, one scalar brought to the host);
:func:`nonfinite_leaves` names the leaves that hold NaN or infinity, for
the error message once a check failed; :func:`check_finite_params` raises
:class:`~bort_jax.training.errors.NonFiniteError` naming them.

Example:
  >>> import jax.numpy as jnp
  >>> from bort_jax.training.numerics import all_finite, nonfinite_leaves
  >>> params = {'dense': {'kernel': jnp.array([1.0, jnp.nan])}}
  >>> bool(all_finite(params)), nonfinite_leaves(params)
  (False, ['dense/kernel'])
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bort_jax.training.errors import NonFiniteError


def _inexact_leaves(tree: Any) -> list[tuple[Any, Any]]:
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  return [
      (path, leaf)
      for path, leaf in leaves
      if hasattr(leaf, 'dtype') and jnp.issubdtype(leaf.dtype, jnp.inexact)
  ]


@jax.jit
def all_finite(tree: Any) -> jax.Array:
  """``True`` iff every floating leaf of ``tree`` is finite (a device scalar).

  ``all_i isfinite(x_i)`` over every element of every inexact leaf;
  integer and key leaves do not count.
  """
  checks = [jnp.all(jnp.isfinite(leaf)) for _, leaf in _inexact_leaves(tree)]
  return jnp.all(jnp.stack(checks)) if checks else jnp.array(True)


def _path_name(path) -> str:
  name = lambda k: getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))
  return '/'.join(str(name(k)) for k in path)


def nonfinite_leaves(tree: Any) -> list[str]:
  """The ``/``-joined paths of the leaves holding NaN or infinity."""
  return [
      _path_name(path)
      for path, leaf in _inexact_leaves(tree)
      if not np.all(np.isfinite(np.asarray(jax.device_get(leaf))))
  ]


def check_finite_params(
    model_or_params: Any, *, what: str = 'the model'
) -> None:
  """Raises if any parameter of a model (or a parameter tree) is not finite.

  Args:
    model_or_params: an ``nnx.Module`` (its ``nnx.Param`` state is
      checked) or a pytree of arrays.
    what: how the message calls it, e.g. ``'the checkpoint of runs/a'``.

  Raises:
    NonFiniteError: naming up to five leaves holding NaN or infinity.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from bort_jax.training.numerics import check_finite_params
    >>> check_finite_params(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))  # finite
    >>> params = {'dense': {'kernel': jnp.array([1.0, jnp.nan])}}
    >>> check_finite_params(params, what='the checkpoint of runs/a')
    Traceback (most recent call last):
    ...
    bort_jax.training.errors.NonFiniteError: the checkpoint of runs/a has non-finite parameters (NaN or infinity) in dense/kernel: the run that produced it diverged
  """
  tree = model_or_params
  if isinstance(tree, nnx.Module):
    tree = nnx.state(tree, nnx.Param)
  if bool(all_finite(tree)):
    return
  bad = nonfinite_leaves(tree)
  more = f' and {len(bad) - 5} more' if len(bad) > 5 else ''
  raise NonFiniteError(
      f'{what} has non-finite parameters (NaN or infinity) in '
      f'{", ".join(bad[:5])}{more}: the run that produced it diverged'
  )


__all__ = ['all_finite', 'check_finite_params', 'nonfinite_leaves']
