r"""Saliency maps: Bort's backtracking (SAT) and gradient baselines.

* :func:`backtracking_saliency`: Algorithm 1 of the Bort paper ("SAT"), which
  explains a prediction with the backtracking map :math:`g` (the
  inverse of :func:`bort_jax.explain.interpreter.backtrack`)
  instead of gradients.
* :func:`feature_visualization`: backtrack one channel of a representation.
* Baselines: :func:`vanilla_gradient` (Simonyan et al. 2014),
  :func:`gradient_x_input` (Shrikumar et al. 2016) and
  :func:`integrated_gradients` (Sundararajan et al. 2017).

All functions take the model (an NNX module or any function of one array,
passed as an argument so that ``jax.jit`` traces its parameters; the
backtracking procedures take the layer to explain by name or index in a
layer chain, or as a function from the input to that layer, see
:func:`~bort_jax.explain.inverse.reconstruct`) and arrays, and are batched over examples
with ``vmap``/``lax.map`` rather than Python loops. Images are NHWC. Reduce
the gradient attributions ``[N, H, W, C]`` to maps with
:func:`attribution_map`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from bort_jax.explain import chain, inverse

__all__ = [
    'SAT_B',
    'SAT_K',
    'SAT_TAU',
    'attribution_map',
    'backtracking_saliency',
    'feature_visualization',
    'gradient_x_input',
    'integrated_gradients',
    'resolve_k',
    'vanilla_gradient',
]

#: The paper's constants: top-k channels, impulse size B, threshold tau.
SAT_K, SAT_B, SAT_TAU = 256, 1000.0, 3.0


def resolve_k(k: int | None, channels: int) -> int:
  """The number of channels SAT keeps.

  ``None`` means the paper's 256, lowered to ``channels`` when the layer has
  fewer (the paper's networks have >= 256 channels in the top layer; a small
  MNIST CNN has 64). An explicit ``k`` must lie in ``[1, channels]``.

  Raises:
    ValueError: for an explicit ``k`` outside ``[1, channels]``.

  Example:
    >>> from bort_jax.explain.saliency import resolve_k
    >>> resolve_k(None, 64), resolve_k(None, 512), resolve_k(8, 64)
    (64, 256, 8)
  """
  if k is None:
    return min(SAT_K, channels)
  k = int(k)
  if not 1 <= k <= channels:
    raise ValueError(
        f'k={k} is not in [1, {channels}]: SAT keeps the top-k channels and the '
        f'layer has {channels} channels (use k=None for min(256, channels))'
    )
  return k


def _output_shape(
    model: Any, x: jax.Array, layer_name: inverse.LayerSpec
) -> tuple[int, ...]:
  """The layer's per-example output shape (checks the layer and ``x``)."""
  if isinstance(layer_name, (str, int)):
    index = chain.resolve_layer(model, layer_name)
    return chain.layer_shapes(model, x.shape[1:], x.dtype)[index][1]
  f = inverse.representation_fn(model, layer_name)
  return tuple(jax.eval_shape(f, x).shape[1:])


def _check_spatial(
    model: Any, x: jax.Array, layer_name: inverse.LayerSpec
) -> tuple[int, ...]:
  """The layer's per-example output shape; must be ``(h, w, C)``."""
  out = _output_shape(model, x, layer_name)
  if len(out) != 3:
    raise ValueError(
        f'layer {_describe(layer_name)} outputs shape {out}; backtracking '
        'saliency needs a spatial feature map (h, w, C), e.g. the top '
        'convolutional layer'
    )
  return out


def _describe(layer_name: inverse.LayerSpec) -> str:
  if isinstance(layer_name, (str, int)):
    return repr(layer_name)
  return 'the output of the model' if layer_name is None else 'the function'


def _backtracking_map(
    model: Any,
    layer_name: inverse.LayerSpec,
    x: jax.Array,
    method: str,
    scaling: str,
    inverse_options: Mapping[str, Any] | None,
) -> Callable[[jax.Array], jax.Array]:
  """``g``: :func:`~bort_jax.explain.inverse.backtracking_map` of the layer."""
  return inverse.backtracking_map(
      model,
      layer_name,
      x.shape[1:],
      x.dtype,
      method=method,
      scaling=scaling,
      **dict(inverse_options or {}),
  )


def backtracking_saliency(
    model: Any,
    x: jax.Array,
    layer_name: inverse.LayerSpec = None,
    *,
    k: int | None = None,
    impulse: float = SAT_B,
    tau: float = SAT_TAU,
    drop_border: bool = True,
    method: inverse.Method = 'transpose',
    scaling: inverse.Scaling = 'auto',
    inverse_options: Mapping[str, Any] | None = None,
    batch_size: int | None = 8,
) -> jax.Array:
  r"""The Bort paper's backtracking saliency (Algorithm 1, "SAT").

  For each example, with :math:`Z = f_{\le L}(x)` (``h x w x C``) the output of
  layer :math:`L` and :math:`g` the backtracking map of that layer:

  1. :math:`v_c = \max Z_c`, :math:`p_c = \arg\max Z_c` for every channel;
     channels whose maximum lies on the border of the map are dropped
     (``drop_border``).
  2. Keep the :math:`k` channels with the largest :math:`v_c`.
  3. :math:`\text{base} = g(0)` (backtracking the all-zero map removes the
     biases' effect).
  4. For each kept channel, :math:`E^{(c)}` is zero except
     :math:`E^{(c)}_{p_c, c} = B`;
     :math:`r_c = \sum_{\text{input channels}} |g(E^{(c)}) - \text{base}|` and
     :math:`m_c = [r_c > \tau \cdot \operatorname{mean}(r_c)]`.
  5. :math:`A = \sum_c \max(v_c, 0)\, m_c`, divided by its maximum.

  The weights are clipped at 0 (a guard: the paper's networks' top channels
  have positive maxima; with LeakyReLU a kept channel could have a
  negative one, which should not subtract evidence). If every channel's
  maximum is on the border the map is all zero.

  Args:
    model: an invertible model: a layer chain, an NNX module or a function
      of one array (see :func:`~bort_jax.explain.inverse.reconstruct`).
    x: ``[N, H, W, C_in]`` inputs.
    layer_name: a layer with a spatial output ``(h, w, C)``: a chain's
      layer name or index (e.g. ``'down2_lrelu'`` of the ``InvertibleCNN``),
      a function from the input to that layer, or ``None`` (the model's
      output).
    k: channels kept; ``None`` (default) is the paper's 256 lowered to the
      channel count (see :func:`resolve_k`).
    impulse: :math:`B` (paper: 1000).
    tau: :math:`\tau` (paper: 3).
    drop_border: drop channels whose maximum lies on the border.
    method: the layer inverses of :math:`g`, ``'transpose'`` (the paper's)
      or ``'pinv'`` (least squares).
    scaling: layer-inverse scaling, see :func:`~bort_jax.explain.kernels.unit_scales`.
    inverse_options: more keyword arguments of
      :func:`~bort_jax.explain.inverse.reconstruct` (e.g. ``maxiter``, ``tol``).
    batch_size: examples backtracked at once (each needs ``k`` passes through
      :math:`g`); ``None``: all.

  Returns:
    ``[N, H, W]`` maps in ``[0, 1]``.

  Raises:
    ValueError: bad layer name, input shape, a layer without spatial output,
      or ``k`` larger than the channel count.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from bort_jax.models import InvertibleCNN
    >>> from bort_jax.explain import backtracking_saliency
    >>> model = InvertibleCNN(channels=(4, 8), rngs=nnx.Rngs(0))
    >>> sat = jax.jit(backtracking_saliency, static_argnums=2)
    >>> sat(model, jnp.ones((2, 28, 28, 1)), 'down2_lrelu').shape
    (2, 28, 28)
  """
  h, w, channels = _check_spatial(model, x, layer_name)
  k = resolve_k(k, channels)
  g = _backtracking_map(model, layer_name, x, method, scaling, inverse_options)
  z = inverse.representation_fn(model, layer_name)(x)
  base = g(jnp.zeros((1, h, w, channels), x.dtype))[0]

  def one(z_n):
    flat = z_n.reshape(h * w, channels)
    values = jnp.max(flat, axis=0)
    positions = jnp.argmax(flat, axis=0)
    rows, cols = positions // w, positions % w
    if drop_border:
      inside = (rows > 0) & (rows < h - 1) & (cols > 0) & (cols < w - 1)
      values = jnp.where(inside, values, -jnp.inf)
    top_values, top_channels = lax.top_k(values, k)
    impulses = jax.vmap(
        lambda p, c: jnp.zeros((h * w, channels), x.dtype).at[p, c].set(impulse)
    )(positions[top_channels], top_channels).reshape(k, h, w, channels)
    responses = jnp.sum(jnp.abs(g(impulses) - base), axis=-1)  # [k, H, W]
    masks = responses > tau * jnp.mean(responses, axis=(1, 2), keepdims=True)
    weights = jnp.where(
        jnp.isfinite(top_values), jnp.maximum(top_values, 0.0), 0.0
    )
    saliency = jnp.einsum('k,khw->hw', weights, masks.astype(x.dtype))
    peak = jnp.max(saliency)
    return jnp.where(peak > 0, saliency / jnp.where(peak > 0, peak, 1.0), 0.0)

  return lax.map(one, z, batch_size=batch_size)


def feature_visualization(
    model: Any,
    x: jax.Array,
    layer_name: inverse.LayerSpec,
    channel: int | jax.Array,
    *,
    method: inverse.Method = 'transpose',
    scaling: inverse.Scaling = 'auto',
    inverse_options: Mapping[str, Any] | None = None,
) -> jax.Array:
  r"""Backtracks one channel of a representation to input space.

  :math:`g(Z \odot e_c) - g(0)`: the representation with every channel but
  :math:`c` set to zero, mapped back, minus the backtracked zero map. For a
  Bort model this shows the input pattern channel :math:`c` responds to in
  each example.

  Args:
    model: an invertible model (see :func:`backtracking_saliency`).
    x: ``[N, ...]`` inputs.
    layer_name: the layer whose output is backtracked (last axis =
      channels), as in :func:`backtracking_saliency`.
    channel: an int, or ``[N]`` ints (one channel per example).
    method: ``'transpose'`` or ``'pinv'`` layer inverses.
    scaling: layer-inverse scaling.
    inverse_options: more keyword arguments of
      :func:`~bort_jax.explain.inverse.reconstruct`.

  Returns:
    ``[N, ...]`` like ``x``.

  Raises:
    ValueError: a concrete channel index out of range, or bad layer/shape.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from bort_jax.models import InvertibleCNN
    >>> from bort_jax.explain import feature_visualization
    >>> model = InvertibleCNN(channels=(4, 8), rngs=nnx.Rngs(0))
    >>> visualize = jax.jit(feature_visualization, static_argnums=2)
    >>> visualize(model, jnp.ones((2, 28, 28, 1)), 'down2_lrelu', 3).shape
    (2, 28, 28, 1)
  """
  out = _output_shape(model, x, layer_name)
  channels = out[-1]
  if isinstance(channel, int) and not 0 <= channel < channels:
    raise ValueError(
        f'channel {channel} is out of range: layer {_describe(layer_name)} '
        f'has {channels}'
    )
  g = _backtracking_map(model, layer_name, x, method, scaling, inverse_options)
  z = inverse.representation_fn(model, layer_name)(x)
  channel = jnp.broadcast_to(jnp.asarray(channel), (x.shape[0],))
  keep = jax.nn.one_hot(channel, channels, dtype=z.dtype)
  keep = keep.reshape(x.shape[0], *([1] * (len(out) - 1)), channels)
  return g(z * keep) - g(jnp.zeros((1, *out), z.dtype))


def _class_score_fn(model: Any) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """``score(x, label)``: the label's logit for one example ``x``."""

  def score(x, label):
    return model(x[None])[0, label].astype(jnp.float32)

  return score


def vanilla_gradient(model: Any, x: jax.Array, labels: jax.Array) -> jax.Array:
  r"""Gradient of the label's logit with respect to the input, :math:`\partial f_y/\partial x`.

  Args:
    model: a classifier ``model(x) -> logits``.
    x: ``[N, ...]`` inputs.
    labels: ``[N]`` classes to explain.

  Returns:
    ``[N, ...]`` attributions.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from bort_jax.explain import vanilla_gradient
    >>> model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    >>> g = vanilla_gradient(model, jnp.ones((1, 3)), jnp.array([1]))
    >>> bool(jnp.allclose(g[0], model.kernel[...][:, 1]))
    True
  """
  return jax.vmap(jax.grad(_class_score_fn(model)))(x, labels)


def gradient_x_input(
    model: Any,
    x: jax.Array,
    labels: jax.Array,
    *,
    baseline: jax.Array | float = 0.0,
) -> jax.Array:
  r"""Gradient times input, :math:`(x - x') \odot \partial f_y/\partial x`.

  Args:
    model: a classifier ``model(x) -> logits``.
    x: ``[N, ...]`` inputs.
    labels: ``[N]`` classes to explain.
    baseline: :math:`x'` (default 0, the usual gradient x input; with
      normalised images pass the normalised black so that "input" means
      "difference from a black image").

  Returns:
    ``[N, ...]`` attributions.
  """
  return (x - baseline) * vanilla_gradient(model, x, labels)


def integrated_gradients(
    model: Any,
    x: jax.Array,
    labels: jax.Array,
    *,
    baseline: jax.Array | float = 0.0,
    num_steps: int = 32,
) -> jax.Array:
  r"""Integrated gradients along the straight path from a baseline.

  .. math::
    \mathrm{IG}_i(x) = (x_i - x'_i) \int_0^1
      \frac{\partial f_y(x' + \alpha (x - x'))}{\partial x_i}\, d\alpha

  with the integral by the trapezoidal rule on ``num_steps`` intervals
  (accumulated with ``lax.scan``: memory does not grow with the steps).
  Completeness: :math:`\sum_i \mathrm{IG}_i \approx f_y(x) - f_y(x')`.

  Args:
    model: a classifier ``model(x) -> logits``.
    x: ``[N, ...]`` inputs.
    labels: ``[N]`` classes to explain.
    baseline: :math:`x'`, broadcastable to ``x`` (e.g. a black image).
    num_steps: intervals of the trapezoidal rule.

  Returns:
    ``[N, ...]`` attributions.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from bort_jax.explain import integrated_gradients
    >>> model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    >>> x = jnp.ones((1, 3))
    >>> ig = integrated_gradients(model, x, jnp.array([0]), num_steps=4)
    >>> bool(jnp.allclose(ig.sum(), model(x)[0, 0] - model(0 * x)[0, 0], atol=1e-5))
    True
  """
  if num_steps < 1:
    raise ValueError(f'num_steps must be positive, got {num_steps}')
  baseline = jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)
  grad_fn = jax.vmap(jax.grad(_class_score_fn(model)))
  alphas = jnp.linspace(0.0, 1.0, num_steps + 1, dtype=x.dtype)
  weights = jnp.full((num_steps + 1,), 1.0 / num_steps, x.dtype)
  weights = weights.at[0].multiply(0.5).at[-1].multiply(0.5)

  def body(total, step):
    alpha, weight = step
    return (
        total + weight * grad_fn(baseline + alpha * (x - baseline), labels),
        None,
    )

  total, _ = lax.scan(body, jnp.zeros_like(x), (alphas, weights))
  return (x - baseline) * total


def attribution_map(
    attributions: jax.Array, absolute: bool = True
) -> jax.Array:
  """Reduces ``[N, H, W, C]`` attributions to ``[N, H, W]`` maps.

  Sums ``|a|`` (``absolute``) or ``a`` over channels.

  Example:
    >>> import jax.numpy as jnp
    >>> from bort_jax.explain import attribution_map
    >>> attribution_map(jnp.array([[[[-1.0, 2.0]]]]))
    Array([[[3.]]], dtype=float32)
  """
  return jnp.sum(jnp.abs(attributions) if absolute else attributions, axis=-1)
