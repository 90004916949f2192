r"""Optimisation-based representation inversion (the non-Bort baseline).

After Mahendran and Vedaldi (2015), "Understanding deep image representations
by inverting them": find an input whose representation matches the given one,
regularised by a total-variation prior and a norm prior. Works for any layer
chain (our ``NamedSequential`` models, any ``nnx.Sequential``; no layer
inverse needed), at the cost of
``num_steps`` forward and backward passes; the Bort reconstruction
(:func:`bort_jax.explain.inverse.reconstruct`) is one backward sweep with
transposed weights. Per example,

.. math::
  \min_x \frac{\lVert\phi(x) - \phi_0\rVert^2}{\lVert\phi_0\rVert^2}
    + \lambda_{TV}\, \frac1P \sum_{i,j}
      \bigl((x_{i,j+1} - x_{ij})^2 + (x_{i+1,j} - x_{ij})^2\bigr)^{\beta/2}
    + \lambda_{2}\, \frac1P \lVert x\rVert_2^2

minimised with Adam (optax) in a ``lax.fori_loop`` from a small random start
drawn with an explicit PRNG key (``P``: number of input entries).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax

from bort_jax.explain import inverse

__all__ = ['invert_by_optimization', 'total_variation']


def total_variation(x: jax.Array, beta: float = 2.0) -> jax.Array:
  r"""Per-example total variation of NHWC images, averaged over entries.

  :math:`\frac1P\sum_{i,j}((x_{i,j+1}-x_{ij})^2 + (x_{i+1,j}-x_{ij})^2)^{\beta/2}`
  over pixels with both neighbours, summed over channels.

  Args:
    x: ``[N, H, W, C]``.
    beta: :math:`\beta` (2: smooth; 1: the usual anisotropy-free TV).

  Returns:
    ``[N]``.

  Example:
    >>> import jax.numpy as jnp
    >>> from bort_jax.explain import total_variation
    >>> total_variation(jnp.ones((1, 4, 4, 1)))
    Array([0.], dtype=float32)
  """
  if x.ndim != 4:
    raise ValueError(
        f'total_variation expects [N, H, W, C] images, got {x.shape}'
    )
  dx = x[:, :-1, 1:, :] - x[:, :-1, :-1, :]
  dy = x[:, 1:, :-1, :] - x[:, :-1, :-1, :]
  sq = jnp.square(dx) + jnp.square(dy)
  # Add a tiny constant so beta < 2 keeps a finite gradient at 0.
  tv = jnp.power(sq + 1e-8, beta / 2) if beta != 2 else sq
  return jnp.sum(tv.reshape(x.shape[0], -1), axis=-1) / x[0].size


def invert_by_optimization(
    model: Any,
    representation: jax.Array,
    layer_name: inverse.LayerSpec,
    input_shape: Sequence[int],
    key: jax.Array,
    *,
    num_steps: int = 200,
    learning_rate: float = 0.05,
    tv_weight: float = 0.05,
    tv_beta: float = 2.0,
    l2_weight: float = 1e-3,
    init_scale: float = 0.1,
    clip_min: float | None = None,
    clip_max: float | None = None,
) -> jax.Array:
  r"""Reconstructs inputs from a representation by gradient descent on the input.

  Args:
    model: a layer chain (one of our ``NamedSequential`` models, any
      ``nnx.Sequential``), an NNX module or a function of one array; nothing
      in it needs an inverse.
    representation: ``[N, ...]`` outputs of ``layer_name``.
    layer_name: the layer that produced ``representation``: a chain's layer
      name or index (negative allowed), a function from the input to it, or
      ``None`` (the model's output).
    input_shape: one input example's shape, e.g. ``(28, 28, 1)``.
    key: PRNG key of the random start.
    num_steps: Adam steps.
    learning_rate: Adam's learning rate.
    tv_weight: :math:`\lambda_{TV}` (images only; ignored for flat inputs).
    tv_beta: :math:`\beta` of the total variation.
    l2_weight: :math:`\lambda_2`.
    init_scale: std of the Gaussian start.
    clip_min, clip_max: the valid input range, enforced after every step.

  Returns:
    ``[N, *input_shape]`` reconstructions.

  Raises:
    ValueError: unknown layer or index out of range, or a representation
      that does not have the layer's output shape.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from bort_jax.models import create_model
    >>> from bort_jax.explain import invert_by_optimization
    >>> model = create_model('mlp', num_classes=10, rngs=nnx.Rngs(0))
    >>> z = model.forward_to(jnp.ones((2, 28, 28, 1)), 'fc1')
    >>> invert_by_optimization(model, z, 'fc1', (28, 28, 1), jax.random.key(0),
    ...                        num_steps=5).shape
    (2, 28, 28, 1)
  """
  input_shape = tuple(int(s) for s in input_shape)
  forward = inverse.representation_fn(model, layer_name)
  expected = jax.eval_shape(
      forward, jax.ShapeDtypeStruct((1, *input_shape), representation.dtype)
  ).shape[1:]
  if (
      representation.ndim != len(expected) + 1
      or representation.shape[1:] != expected
  ):
    raise ValueError(
        f'representation has shape {tuple(representation.shape)}, but layer '
        f'{layer_name!r} outputs [N, *{expected}] for inputs of shape '
        f'{input_shape}'
    )
  n = representation.shape[0]
  target = representation.reshape(n, -1)
  target_norm = jnp.maximum(jnp.sum(jnp.square(target), axis=-1), 1e-12)
  images = len(input_shape) == 3

  def loss_fn(x):
    z = forward(x).reshape(n, -1)
    loss = jnp.sum(jnp.square(z - target), axis=-1) / target_norm
    loss += (
        l2_weight * jnp.sum(jnp.square(x.reshape(n, -1)), axis=-1) / x[0].size
    )
    if images:
      loss += tv_weight * total_variation(x, tv_beta)
    return jnp.sum(loss)

  tx = optax.adam(learning_rate)
  x0 = init_scale * jax.random.normal(
      key, (n, *input_shape), representation.dtype
  )
  if clip_min is not None or clip_max is not None:
    x0 = jnp.clip(x0, clip_min, clip_max)

  def body(_, carry):
    x, opt_state = carry
    grads = jax.grad(loss_fn)(x)
    updates, opt_state = tx.update(grads, opt_state, x)
    x = optax.apply_updates(x, updates)
    if clip_min is not None or clip_max is not None:
      x = jnp.clip(x, clip_min, clip_max)
    return x, opt_state

  x, _ = lax.fori_loop(0, num_steps, body, (x0, tx.init(x0)))
  return x
