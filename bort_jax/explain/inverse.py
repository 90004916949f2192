r"""The backtracking map of a model: from a layer's output back to its input.

:func:`reconstruct` maps the representation of an input at some layer back
to input space: :math:`\hat x = g(z)`, the *backtracking map* of the Bort
paper (``docs/method.md``). It is built on
:func:`~bort_jax.explain.interpreter.backtrack`, which runs any JAX function's
primitives backwards, so the model may be

* any function of one array, with the layer to explain named by a function:
  ``reconstruct(f, z, input_shape=...)`` with ``f`` the model up to that
  layer (an NNX module of any structure, ``functools.partial(linen.apply,
  variables)``, a plain function);
* a layer chain (our ``NamedSequential`` models, any ``nnx.Sequential``)
  with the layer named by its name or index, as
  ``reconstruct(model, z, 'down2_lrelu', (28, 28, 1))``.

``method='transpose'`` (default) is the paper's map (transposed weights);
``method='pinv'`` inverts every linear primitive by least squares, the fair
baseline for models not trained with Bort. See
:mod:`~bort_jax.explain.kernels` for the per-layer mathematics and
:mod:`~bort_jax.explain.rules` for the primitives covered.

In a chain, a layer type with an inverse declared by
:func:`~bort_jax.explain.register_inverse` is inverted by that function
(through :func:`~bort_jax.explain.interpreter.custom_inverse`); every other
layer by the rules of its primitives.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from flax import nnx
  >>> from bort_jax.explain import reconstruct
  >>> from bort_jax.models import create_model
  >>> model = create_model('invertible_cnn', num_classes=10, channels=(4, 8),
  ...                      rngs=nnx.Rngs(0))
  >>> x = jnp.zeros((2, 28, 28, 1))
  >>> z = model.forward_to(x, 'down2_lrelu')
  >>> recon = jax.jit(reconstruct, static_argnums=(2, 3))
  >>> recon(model, z, 'down2_lrelu', (28, 28, 1)).shape
  (2, 28, 28, 1)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import nnx

from bort_jax.explain import interpreter
from bort_jax.explain import kernels
from bort_jax.explain.chain import (
    LayerRef,
    describe_layer,
    layer_chain,
    layer_label,
    layer_shapes,
    resolve_layer,
)
from bort_jax.explain.registry import find_inverse

__all__ = [
    'Method',
    'Scaling',
    'backtracking_map',
    'invertible_layer_names',
    'layer_input_shapes',
    'layer_inverse',
    'reconstruct',
    'reconstruct_all',
    'representation_fn',
]

Scaling = Literal['auto', 'row', 'frame']
Method = Literal['transpose', 'pinv']
#: How the layer to explain is named: a chain's layer name or index, or a
#: function from the model's input to that layer's output.
LayerSpec = LayerRef | Callable[[jax.Array], jax.Array] | None


def _bound_arguments(function: Any) -> dict[str, Any]:
  """The arguments a ``functools.partial`` (possibly nested) fixes, by name.

  Raises:
    ValueError: if the partial binds positional arguments (they would take
      the place of the layer's input).
  """
  partials = []
  while isinstance(function, functools.partial):
    partials.append(function)
    function = function.func
  keywords = {}
  for p in reversed(partials):  # Innermost first.
    if p.args:
      raise ValueError(
          f'{describe_layer(p)} binds positional arguments, which take the '
          'place of the layer input; pass them by keyword, e.g. '
          f'functools.partial({describe_layer(function)}, negative_slope=0.5)'
      )
    keywords.update(p.keywords)
  return keywords


def _check_layer(layer: Any, label: str) -> None:
  """Layer-level refusals that the primitives alone cannot explain."""
  if isinstance(layer, nnx.BatchNorm) and not layer.use_running_average:
    raise ValueError(
        f'{label}: a BatchNorm layer has no inverse in training mode '
        f'(use_running_average={layer.use_running_average}): its output '
        'depends on the batch statistics. Call model.eval() (or build it with '
        'use_running_average=True) to invert it with its running statistics'
    )
  if (
      isinstance(layer, nnx.Dropout)
      and not layer.deterministic
      and layer.rate > 0
  ):
    raise ValueError(
        f'{label}: a Dropout layer in training mode drops random units and has '
        'no inverse. Call model.eval() (or build it with deterministic=True)'
    )
  if isinstance(layer, functools.partial):
    _bound_arguments(layer)


def _is_chain(model: Any) -> bool:
  try:
    layer_chain(model)
  except ValueError:
    return False
  return True


def _chain_layers(
    model: Any, stop: int, settings: dict[str, Any], shapes
) -> list[Callable[[jax.Array], jax.Array]]:
  """The layers up to ``stop``, a registered inverse attached where given."""
  layers = []
  for i, layer in enumerate(layer_chain(model).layers[: stop + 1]):
    _check_layer(layer, layer_label(model, i))
    inverse_fn = find_inverse(layer)
    if inverse_fn is not None:
      in_shape = shapes[i][0]

      def inverse(y, layer=layer, inverse_fn=inverse_fn, in_shape=in_shape):
        return inverse_fn(layer, y, in_shape, **settings)

      layer = interpreter.custom_inverse(layer, inverse)
    layers.append(layer)
  return layers


def representation_fn(
    model: Any, layer: LayerSpec = None
) -> Callable[[jax.Array], jax.Array]:
  """The function from the model's input to the representation to explain.

  Args:
    model: a layer chain, an NNX module, or any function of one array.
    layer: a chain's layer name or index (the model up to that layer), a
      function (returned as is), or ``None`` (the whole model).

  Returns:
    ``x -> z``.

  Raises:
    ValueError: a name or index on a model that is not a chain, or a bad
      layer address.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from bort_jax.explain.inverse import representation_fn
    >>> model = nnx.Sequential(nnx.Linear(2, 3, rngs=nnx.Rngs(0)), nnx.relu)
    >>> representation_fn(model, 0)(jnp.ones((1, 2))).shape
    (1, 3)
  """
  if layer is None:
    if not callable(model):
      raise ValueError(f'{type(model).__name__} is not callable')
    return model
  if callable(layer) and not isinstance(layer, (str, int)):
    return layer
  stop = resolve_layer(model, layer)
  layers = layer_chain(model).layers[: stop + 1]

  def forward(x):
    for one in layers:
      x = one(x)
    return x

  return forward


def backtracking_map(
    model: Any,
    layer: LayerSpec,
    input_shape: Sequence[int],
    dtype: Any = jnp.float32,
    *,
    method: Method = 'transpose',
    scaling: Scaling = 'auto',
    eps: float = 1e-8,
    maxiter: int = kernels.PINV_MAXITER,
    tol: float = kernels.PINV_TOL,
    **options: Any,
) -> Callable[[jax.Array], jax.Array]:
  """``g`` for the representation of ``model`` at ``layer``, any batch size.

  Built with :func:`~bort_jax.explain.interpreter.backtrack` on one example
  and mapped over the batch axis, so every example is inverted on its own
  (fixed-point and least-squares solves included). Checks everything
  (layer, shapes, a rule for every primitive) when called.

  Args:
    model: a layer chain, an NNX module, or a function of one array.
    layer: see :func:`representation_fn`.
    input_shape: one example's input shape.
    dtype: the input dtype.
    method, scaling, eps, maxiter, tol: see
      :func:`~bort_jax.explain.interpreter.backtrack`.
    **options: ``residual_iterations``, ``gauss_newton_steps``, ``rules``;
      in a chain, also passed on to registered inverses.

  Returns:
    ``g(z)``: ``[N, *representation shape]`` to ``[N, *input_shape]``.

  Raises:
    ValueError: a bad layer or input shape, a layer or primitive without an
      inverse (named), or a bad option.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from bort_jax.explain import backtracking_map
    >>> layer = nnx.Linear(3, 3, rngs=nnx.Rngs(0))
    >>> g = backtracking_map(layer, None, (3,), method='pinv')
    >>> x = jnp.ones((2, 3))
    >>> bool(jnp.allclose(g(layer(x)), x, atol=1e-4))
    True
  """
  kernels.check_method(method)
  kernels.check_scaling(scaling)
  input_shape = tuple(int(s) for s in input_shape)
  settings = {
      'method': method,
      'scaling': scaling,
      'eps': eps,
      'maxiter': maxiter,
      'tol': tol,
  }
  backtrack_options = {
      k: options.pop(k)
      for k in ('residual_iterations', 'gauss_newton_steps', 'rules')
      if k in options
  }
  x_like = jax.ShapeDtypeStruct((1, *input_shape), dtype)
  is_name = isinstance(layer, (str, int))
  if is_name:
    stop = resolve_layer(model, layer)
    shapes = layer_shapes(model, input_shape, dtype)
    layers = _chain_layers(model, stop, {**settings, **options}, shapes)

    def f(x):
      for one in layers:
        x = one(x)
      return x

  else:
    if options:
      raise TypeError(f'unexpected options {sorted(options)}')
    f = representation_fn(model, layer)
  try:
    g_one = interpreter.backtrack(f, x_like, **settings, **backtrack_options)
  except ValueError as error:
    if not is_name:
      raise
    raise _name_failing_layer(model, stop, shapes, settings, error) from error

  def g(z: jax.Array) -> jax.Array:
    return jax.vmap(lambda z_n: g_one(z_n[None])[0])(z)

  return g


def _name_failing_layer(model, stop, shapes, settings, error) -> ValueError:
  """The error of the first layer of a chain that has no inverse alone."""
  layers = layer_chain(model).layers
  for i in range(stop + 1):
    if find_inverse(layers[i]) is not None:
      continue
    x_like = jax.ShapeDtypeStruct((1, *shapes[i][0]), jnp.float32)
    try:
      interpreter.backtrack(layers[i], x_like, **settings)
    except ValueError as layer_error:
      return ValueError(
          f'{layer_label(model, i)} has no inverse: {layer_error}. For a '
          'layer type of your own, bort_jax.explain.register_inverse('
          f'{describe_layer(layers[i])}, inverse_fn) declares one'
      )
  return error


def layer_inverse(
    layer: Any,
    y: jax.Array,
    input_shape: Sequence[int],
    *,
    method: Method = 'transpose',
    scaling: Scaling = 'auto',
    eps: float = 1e-8,
    maxiter: int = kernels.PINV_MAXITER,
    tol: float = kernels.PINV_TOL,
    **options: Any,
) -> jax.Array:
  """Maps one layer's outputs back to its inputs.

  Args:
    layer: a module or a function of one array (a chain of one).
    y: the layer's outputs ``[N, ...]``.
    input_shape: one example's input shape (no batch axis).
    method, scaling, eps, maxiter, tol, options: see :func:`reconstruct`.

  Returns:
    ``[N, *input_shape]`` input estimates.

  Raises:
    ValueError: a layer without an inverse (named), a BatchNorm in training
      mode, or a bad option.

  Example:
    >>> import jax.numpy as jnp
    >>> from bort_jax.models.layers import LeakyReLU
    >>> from bort_jax.explain import layer_inverse
    >>> layer_inverse(LeakyReLU(0.5), jnp.array([[-1.0, 2.0]]), (2,))
    Array([[-2.,  2.]], dtype=float32)
  """
  return reconstruct(
      nnx.Sequential(layer),
      y,
      0,
      input_shape,
      method=method,
      scaling=scaling,
      eps=eps,
      maxiter=maxiter,
      tol=tol,
      **options,
  )


def layer_input_shapes(
    model: Any, input_shape: Sequence[int], dtype: Any = jnp.float32
) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
  """Per-example ``(input shape, output shape)`` of every layer, abstractly.

  Args:
    model: a ``NamedSequential`` or any ``nnx.Sequential``.
    input_shape: one example's shape (no batch axis), e.g. ``(28, 28, 1)``.
    dtype: input dtype.

  Returns:
    One ``(in_shape, out_shape)`` pair per layer, in layer order.

  Raises:
    ValueError: if the model is not a layer chain or cannot run on inputs
      of that shape.

  Example:
    >>> from flax import nnx
    >>> from bort_jax.models import create_model
    >>> from bort_jax.explain.inverse import layer_input_shapes
    >>> model = create_model('mlp', num_classes=10, rngs=nnx.Rngs(0))
    >>> layer_input_shapes(model, (28, 28, 1))[1]
    ((784,), (256,))
  """
  return layer_shapes(model, input_shape, dtype)


def invertible_layer_names(
    model: Any, input_shape: Sequence[int]
) -> tuple[str, ...] | tuple[int, ...]:
  """The layers :func:`reconstruct` can start from: all of them, or an error.

  Args:
    model: a ``NamedSequential`` or any ``nnx.Sequential``.
    input_shape: one example's shape.

  Returns:
    The layer names, or ``(0, 1, ..., L - 1)`` for a model without names.

  Raises:
    ValueError: if the model is not a layer chain, or a layer has no
      inverse (the message names the first such layer).

  Example:
    >>> from flax import nnx
    >>> from bort_jax.explain.inverse import invertible_layer_names
    >>> model = nnx.Sequential(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), nnx.relu)
    >>> invertible_layer_names(model, (2,))
    (0, 1)
  """
  layers, names = layer_chain(model)
  backtracking_map(model, len(layers) - 1, input_shape)
  return names if names is not None else tuple(range(len(layers)))


def reconstruct(
    model: Any,
    representation: jax.Array,
    layer_name: LayerSpec = None,
    input_shape: Sequence[int] | None = None,
    *,
    method: Method = 'transpose',
    scaling: Scaling = 'auto',
    eps: float = 1e-8,
    maxiter: int = kernels.PINV_MAXITER,
    tol: float = kernels.PINV_TOL,
    **options: Any,
) -> jax.Array:
  r"""Maps the output of a layer back to input space (the backtracking map).

  :math:`\hat x = g(z)`: for a chain
  :math:`g = f_1^{-1} \circ \cdots \circ f_L^{-1}`, each layer inverted by
  the rules of its primitives (or its registered inverse); for any other
  model, the same run backwards over its primitives, residual blocks
  included (see :func:`~bort_jax.explain.interpreter.backtrack`). Every check
  happens before anything is computed. Jittable with the model as an
  argument (``layer_name``, ``input_shape``, ``method`` and ``scaling``
  static).

  Args:
    model: a layer chain (our ``NamedSequential`` models, any
      ``nnx.Sequential``), an NNX module of any structure, or a function of
      one array (e.g. ``functools.partial(linen_model.apply, variables)``),
      in eval mode.
    representation: ``[N, ...]``, the output of that layer for a batch of
      ``N`` inputs (or any array of that shape).
    layer_name: a chain's layer name or index; a function from the input to
      the layer's output; or ``None``: the output of ``model`` itself.
    input_shape: one input example's shape, e.g. ``(28, 28, 1)``.
    method: ``'transpose'`` (default: the paper's transposed-weight
      inverse, exact for orthogonal weights) or ``'pinv'`` (least squares;
      a fair baseline for models not trained with Bort).
    scaling: see :func:`~bort_jax.explain.kernels.unit_scales`
      (``'transpose'``).
    eps: added to the divisors (``'transpose'``).
    maxiter, tol: conjugate-gradient iterations and relative tolerance of
      the least-squares solves (``'pinv'``; see
      :func:`~bort_jax.explain.kernels.least_squares_inverse`).
    **options: ``residual_iterations``, ``gauss_newton_steps``, ``rules``
      of :func:`~bort_jax.explain.interpreter.backtrack`; in a chain, also
      passed on to registered inverses.

  Returns:
    ``[N, *input_shape]`` reconstructions.

  Raises:
    ValueError: a bad layer address, a layer or primitive without an
      inverse, an ``input_shape`` that does not fit the model, a
      ``representation`` without that layer's output shape, or an unknown
      ``method``/``scaling``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from bort_jax.explain import reconstruct
    >>> class Block(nnx.Module):  # Not a Sequential: a __call__ of its own.
    ...   def __init__(self, rngs):
    ...     self.conv = nnx.Conv(1, 4, (2, 2), strides=2, rngs=rngs)
    ...   def __call__(self, x):
    ...     return jax.nn.leaky_relu(self.conv(x), 0.5)
    >>> block = Block(nnx.Rngs(0))
    >>> x = jax.random.normal(jax.random.key(1), (3, 8, 8, 1))
    >>> x_hat = reconstruct(block, block(x), input_shape=(8, 8, 1),
    ...                     method='pinv')
    >>> bool(jnp.allclose(x_hat, x, atol=1e-4))
    True
  """
  if input_shape is None:
    raise ValueError('reconstruct needs the input_shape of one example')
  input_shape = tuple(int(s) for s in input_shape)
  dtype = representation.dtype
  g = backtracking_map(
      model,
      layer_name,
      input_shape,
      dtype,
      method=method,
      scaling=scaling,
      eps=eps,
      maxiter=maxiter,
      tol=tol,
      **options,
  )
  expected = jax.eval_shape(
      representation_fn(model, layer_name),
      jax.ShapeDtypeStruct((1, *input_shape), dtype),
  ).shape[1:]
  if (
      representation.ndim != len(expected) + 1
      or representation.shape[1:] != expected
  ):
    where = (
        layer_label(model, resolve_layer(model, layer_name))
        if isinstance(layer_name, (str, int))
        else 'the model'
    )
    raise ValueError(
        f'representation has shape {tuple(representation.shape)}, but '
        f'{where} outputs [N, *{expected}] for inputs of shape '
        f'{input_shape}; expected {("N", *expected)}'
    )
  return g(representation)


def reconstruct_all(
    model: Any,
    x: jax.Array,
    layer_names: Sequence[LayerRef] | None = None,
    **options: Any,
) -> dict[LayerRef, jax.Array]:
  """Runs ``x`` forward and reconstructs it from each layer in ``layer_names``.

  Args:
    model: a layer chain (see :func:`reconstruct`).
    x: ``[N, *input_shape]`` inputs.
    layer_names: layers to reconstruct from, names or indices (default:
      all, by name, or by index for a model without names).
    **options: ``method``, ``scaling``, ``eps``, ``maxiter``, ``tol``... of
      :func:`reconstruct`.

  Returns:
    ``{layer: [N, *input_shape] reconstruction}`` in layer order, keyed as
    given.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from bort_jax.models import create_model
    >>> from bort_jax.explain import reconstruct_all
    >>> model = create_model('mlp', num_classes=10, rngs=nnx.Rngs(0))
    >>> sorted(reconstruct_all(model, jnp.ones((1, 784)), ['fc1', 'fc1_relu']))
    ['fc1', 'fc1_relu']
  """
  layers, names = layer_chain(model)
  if layer_names is None:
    layer_names = names if names is not None else tuple(range(len(layers)))
  indices = {resolve_layer(model, layer): layer for layer in layer_names}
  outputs, y = {}, x
  for i, layer in enumerate(layers[: max(indices, default=-1) + 1]):
    y = layer(y)
    if i in indices:
      outputs[indices[i]] = reconstruct(model, y, i, x.shape[1:], **options)
  return outputs
