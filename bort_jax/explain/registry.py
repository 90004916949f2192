r"""Inverses of layer types declared by the user, for layer chains.

:func:`~bort_jax.explain.reconstruct` maps a representation back through
the primitives of each layer (:mod:`~bort_jax.explain.rules`). A layer type
whose primitives have no rule (or whose inverse is known in closed form)
can be given one here: in a layer chain, every layer of a registered type
(or a registered function, also through ``functools.partial``) is inverted
by its registered function instead, through
:func:`~bort_jax.explain.interpreter.custom_inverse`. Outside chains, wrap the
sub-function in :func:`~bort_jax.explain.interpreter.custom_inverse`
directly.

An inverse function has the signature

.. code-block:: python

  inverse_fn(layer, y, input_shape, *, method, **options) -> x

* ``layer``: the layer instance (for a plain function, the function or the
  ``functools.partial`` as it appears in the model, so the inverse can read
  the partial's keywords);
* ``y``: ``[N, ...]`` the layer's outputs;
* ``input_shape``: one example's input shape (no batch axis);
* ``method``: ``'transpose'`` (the Bort paper's transposed-weight inverse)
  or ``'pinv'`` (least squares); an inverse that has only one answer (an
  exact inverse) may ignore it;
* ``options``: the other keyword arguments of ``reconstruct``
  (``scaling``, ``eps``, ``maxiter``, ``tol`` and any extra ones); an inverse
  must accept ``**options`` and ignore the ones it does not use.

It returns ``[N, *input_shape]``, and must be traceable (``jax.jit``,
``jax.vmap``) for the procedures built on the backtracking map to be.

Lookup: a function (or a ``functools.partial`` of it, unwrapped) is looked up
by identity among registered functions; a module by its type and then its
base classes in method resolution order, so a subclass inherits its parent's
inverse until it registers its own.

Example:
  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> from bort_jax.explain import register_inverse
  >>> from bort_jax.explain.registry import find_inverse
  >>> class Scale(nnx.Module):  # y = x * s, per channel
  ...   def __init__(self, channels):
  ...     self.s = nnx.Param(jnp.full((channels,), 2.0))
  ...   def __call__(self, x):
  ...     return x * self.s[...]
  >>> @register_inverse(Scale)
  ... def scale_inverse(layer, y, input_shape, *, method, **options):
  ...   return y / layer.s[...]
  >>> find_inverse(Scale(3)) is scale_inverse
  True
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax

__all__ = [
    'InverseFn',
    'find_inverse',
    'register_inverse',
    'registered_layer_types',
]

#: ``inverse_fn(layer, y, input_shape, *, method, **options) -> x``.
InverseFn = Callable[..., jax.Array]

# Module types -> inverse, and functions (compared by identity) -> inverse.
_TYPE_INVERSES: dict[type, InverseFn] = {}
_FUNCTION_INVERSES: list[tuple[Callable[..., Any], InverseFn]] = []


def _check_inverse_fn(inverse_fn: Any) -> None:
  if not callable(inverse_fn):
    raise ValueError(  # noqa: TRY004
        f'inverse_fn must be callable, got {inverse_fn!r}'
    )
  try:
    parameters = inspect.signature(inverse_fn).parameters.values()
  except (TypeError, ValueError):  # Some builtins have no signature.
    return
  if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
    raise ValueError(
        f'inverse_fn {getattr(inverse_fn, "__name__", inverse_fn)!r} must '
        'accept **options: the signature is '
        'inverse_fn(layer, y, input_shape, *, method, '
        '**options) -> x'
    )


def unwrap_partial(layer: Any) -> Any:
  """The function under (possibly nested) ``functools.partial``\\ s."""
  while isinstance(layer, functools.partial):
    layer = layer.func
  return layer


def register_inverse(
    layer_type: type | Callable[..., Any], inverse_fn: InverseFn | None = None
) -> Any:
  """Declares the inverse of a layer type (or of a plain function layer).

  Registering a type (or function) again replaces its inverse, so a
  built-in one can be overridden.

  Args:
    layer_type: a class (every instance of it and of its subclasses that
      register nothing themselves), or a function used as a layer (matched
      by identity, also through ``functools.partial``).
    inverse_fn: ``inverse_fn(layer, y, input_shape, *, method, **options)
      -> x`` (see the module docstring). If omitted, ``register_inverse``
      returns a decorator.

  Returns:
    ``inverse_fn`` (or the decorator).

  Raises:
    ValueError: ``layer_type`` is neither a class nor callable, or
      ``inverse_fn`` does not accept ``**options``.

  Example:
    >>> import functools, jax.numpy as jnp
    >>> from bort_jax.explain import register_inverse
    >>> from bort_jax.explain.registry import find_inverse
    >>> def cube(x, offset=0.0):
    ...   return x**3 + offset
    >>> def cube_inverse(function, y, input_shape, **options):
    ...   return jnp.cbrt(y - function.keywords.get('offset', 0.0))
    >>> _ = register_inverse(cube, cube_inverse)
    >>> find_inverse(functools.partial(cube, offset=1.0)) is cube_inverse
    True
  """
  if inverse_fn is None:
    return functools.partial(register_inverse, layer_type)
  if not (isinstance(layer_type, type) or callable(layer_type)):
    raise ValueError(  # noqa: TRY004
        'layer_type must be a class or a function, got '
        f'{type(layer_type).__name__}'
    )
  _check_inverse_fn(inverse_fn)
  if isinstance(layer_type, type):
    _TYPE_INVERSES[layer_type] = inverse_fn
  else:
    function = unwrap_partial(layer_type)
    _FUNCTION_INVERSES[:] = [
        (f, g) for f, g in _FUNCTION_INVERSES if f is not function
    ]
    _FUNCTION_INVERSES.append((function, inverse_fn))
  return inverse_fn


def find_inverse(layer: Any) -> InverseFn | None:
  """The registered inverse of ``layer``, or ``None``.

  Args:
    layer: a module instance, a function, or a ``functools.partial``.

  Returns:
    The inverse function, or ``None`` if none is registered.
  """
  function = unwrap_partial(layer)
  for registered, inverse_fn in _FUNCTION_INVERSES:
    if registered is function:
      return inverse_fn
  if isinstance(layer, functools.partial):
    return None
  for cls in type(layer).__mro__:
    if cls in _TYPE_INVERSES:
      return _TYPE_INVERSES[cls]
  return None


def registered_layer_types() -> tuple[Any, ...]:
  """Every registered class and function, in registration order."""
  return (*_TYPE_INVERSES, *(f for f, _ in _FUNCTION_INVERSES))
