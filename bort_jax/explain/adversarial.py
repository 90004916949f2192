r"""Adversarial samples: Bort's explainable ones (our design), FGSM and PGD.

**Explainable adversarial samples** (:func:`explainable_adversarial`). The
Bort paper synthesises adversarial samples from a Bort-trained model "without
additional parameters and training" but does not publish how; the procedure
here is **our design**. It uses only the forward pass and the backtracking map
:math:`g` (:func:`bort_jax.explain.interpreter.backtrack`), never a gradient of
the network:

1. :math:`z = f_{\le L}(x)`, the representation fed to the linear classifier
   (logits :math:`z^\top W + b`).
2. Move :math:`z` toward the target class :math:`t`:

   * ``mode='classifier'`` (default): along :math:`d = w_t - w_c`, the
     difference of the classifier's weight vectors of the target and of the
     current strongest other class :math:`c`. The step
     :math:`\alpha_0 = \max(m - (f_t - f_c), 0) / \lVert d\rVert^2` would
     give the logit margin :math:`m` if the representation could move
     freely; it cannot (only representations of some input can occur, and
     :math:`g` is an approximate inverse), so the step is searched:
     candidates :math:`x_s = \operatorname{clip}(x + g(z + s\alpha_0 d) - g(z))`
     for the scales :math:`s` of a geometric grid from 1 to ``max_scale``
     are evaluated with *forward passes only*, and the smallest scale whose
     logits have margin :math:`\ge m` is kept (if none, the one with the
     largest margin);
   * ``mode='example'``: toward the representation :math:`z_t` of a given
     example of the target class, :math:`z' = z + \beta (z_t - z)`, and
     :math:`x \leftarrow \operatorname{clip}(x + g(z') - g(z))`.

3. Repeat ``num_steps`` times (in ``'classifier'`` mode an example that
   already has the margin is left unchanged).

For a Bort model, :math:`g` maps a representation direction to the input
pattern it stands for, so the perturbation is a picture of "more of class
:math:`t`, less of class :math:`c`": it explains itself.

**Baselines**: :func:`fgsm` (Goodfellow et al. 2015) and :func:`pgd` (Madry et
al. 2018), in L-inf and L2, targeted and untargeted, for any number of
classes, with ``lax.fori_loop`` and explicit PRNG keys.

All functions take the model and arrays, are jittable (the model as an
argument, options static) and batched over examples.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax import lax

from bort_jax.explain import chain, inverse
from bort_jax.models.layers import Flatten

__all__ = [
    'NORMS',
    'classifier_input_layer',
    'explainable_adversarial',
    'fgsm',
    'pgd',
]

Norm = Literal['linf', 'l2']
#: The threat models of :func:`fgsm` and :func:`pgd`.
NORMS: tuple[str, ...] = ('linf', 'l2')


def _check_norm(norm: str) -> None:
  if norm not in NORMS:
    raise ValueError(f'unknown norm {norm!r}; valid norms: {list(NORMS)}')


def _clip(
    x: jax.Array, clip_min: float | None, clip_max: float | None
) -> jax.Array:
  if clip_min is None and clip_max is None:
    return x
  return jnp.clip(x, clip_min, clip_max)


def _per_example_norm(x: jax.Array) -> jax.Array:
  """L2 norm of every example, shaped to broadcast against ``x``."""
  norms = jnp.sqrt(jnp.sum(jnp.square(x.reshape(x.shape[0], -1)), axis=-1))
  return norms.reshape(-1, *([1] * (x.ndim - 1)))


def _check_labels(x: jax.Array, labels: jax.Array, what: str) -> None:
  if labels.shape != (x.shape[0],):
    raise ValueError(
        f'{what} must have shape [N] = ({x.shape[0]},), got {labels.shape}'
    )


def _loss_grad(
    model: Any, x: jax.Array, labels: jax.Array, targeted: bool
) -> jax.Array:
  """Gradient of the per-example loss the attack *increases*."""

  def loss(inputs):
    logits = model(inputs).astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(-ce if targeted else ce)

  return jax.grad(loss)(x)


def _ascent_direction(grad: jax.Array, norm: str) -> jax.Array:
  if norm == 'linf':
    return jnp.sign(grad)
  return grad / jnp.maximum(_per_example_norm(grad), 1e-12)


def _project(delta: jax.Array, eps: float, norm: str) -> jax.Array:
  if norm == 'linf':
    return jnp.clip(delta, -eps, eps)
  norms = _per_example_norm(delta)
  return delta * jnp.minimum(1.0, eps / jnp.maximum(norms, 1e-12))


def fgsm(
    model: Any,
    x: jax.Array,
    labels: jax.Array,
    eps: float,
    *,
    norm: Norm = 'linf',
    targeted: bool = False,
    clip_min: float | None = None,
    clip_max: float | None = None,
) -> jax.Array:
  r"""Fast gradient (sign) method: one step of size ``eps``.

  Untargeted: :math:`x + \epsilon\,\mathrm{sign}\nabla_x \mathrm{CE}(f(x), y)`
  (L-inf) or :math:`x + \epsilon \nabla/\lVert\nabla\rVert_2` (L2); targeted
  (``labels`` are then the targets): the same step *down* the target's
  cross-entropy. Then clipped to ``[clip_min, clip_max]``.

  Args:
    model: a classifier ``model(x) -> logits [N, K]``, any ``K``.
    x: ``[N, ...]`` inputs.
    labels: ``[N]`` true classes (untargeted) or target classes (targeted).
    eps: the step (the radius of the threat model).
    norm: ``'linf'`` or ``'l2'``.
    targeted: see above.
    clip_min, clip_max: valid input range (``None``: unbounded).

  Returns:
    ``[N, ...]`` adversarial inputs.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from bort_jax.explain import fgsm
    >>> model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    >>> x = jnp.zeros((2, 4))
    >>> x_adv = fgsm(model, x, jnp.array([0, 1]), 0.1)
    >>> round(float(jnp.abs(x_adv - x).max()), 6)
    0.1
  """
  _check_norm(norm)
  _check_labels(x, labels, 'labels')
  step = _ascent_direction(_loss_grad(model, x, labels, targeted), norm)
  return _clip(x + eps * step, clip_min, clip_max)


def pgd(
    model: Any,
    x: jax.Array,
    labels: jax.Array,
    eps: float,
    key: jax.Array,
    *,
    num_steps: int = 20,
    step_size: float | None = None,
    norm: Norm = 'linf',
    targeted: bool = False,
    random_start: bool = True,
    clip_min: float | None = None,
    clip_max: float | None = None,
) -> jax.Array:
  r"""Projected gradient descent (Madry et al. 2018).

  Starts from a uniform random point of the ``eps`` ball (``random_start``;
  L2: uniform direction, radius :math:`\epsilon u^{1/D}`), then repeats
  ``num_steps`` times: an FGSM step of ``step_size``, projection onto the
  ``eps`` ball around ``x``, clipping to the valid range
  (``lax.fori_loop``).

  Args:
    model: a classifier ``model(x) -> logits [N, K]``, any ``K``.
    x: ``[N, ...]`` inputs.
    labels: ``[N]`` true classes (untargeted) or target classes (targeted).
    eps: radius of the threat model.
    key: PRNG key of the random start.
    num_steps: iterations.
    step_size: per-iteration step (default ``2.5 * eps / num_steps``).
    norm: ``'linf'`` or ``'l2'``.
    targeted: decrease the target's cross-entropy instead of increasing the
      label's.
    random_start: start at a random point of the ball (else at ``x``).
    clip_min, clip_max: valid input range.

  Returns:
    ``[N, ...]`` adversarial inputs within ``eps`` of ``x``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from bort_jax.explain import pgd
    >>> model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    >>> x = jnp.zeros((2, 4))
    >>> x_adv = pgd(model, x, jnp.array([0, 1]), 0.5, jax.random.key(0), norm='l2')
    >>> bool((jnp.linalg.norm(x_adv - x, axis=-1) <= 0.5 + 1e-5).all())
    True
  """
  _check_norm(norm)
  _check_labels(x, labels, 'labels')
  if num_steps < 1:
    raise ValueError(f'num_steps must be positive, got {num_steps}')
  step_size = 2.5 * eps / num_steps if step_size is None else step_size
  if random_start:
    if norm == 'linf':
      delta = jax.random.uniform(key, x.shape, x.dtype, -eps, eps)
    else:
      key_dir, key_radius = jax.random.split(key)
      direction = jax.random.normal(key_dir, x.shape, x.dtype)
      direction = direction / jnp.maximum(_per_example_norm(direction), 1e-12)
      dim = x[0].size
      radius = eps * jax.random.uniform(key_radius, (x.shape[0],), x.dtype) ** (
          1.0 / dim
      )
      delta = direction * radius.reshape(-1, *([1] * (x.ndim - 1)))
  else:
    delta = jnp.zeros_like(x)
  x_adv = _clip(x + delta, clip_min, clip_max)

  def body(_, x_adv):
    step = _ascent_direction(_loss_grad(model, x_adv, labels, targeted), norm)
    delta = _project(x_adv + step_size * step - x, eps, norm)
    return _clip(x + delta, clip_min, clip_max)

  return lax.fori_loop(0, num_steps, body, x_adv)


def classifier_input_layer(model: Any) -> chain.LayerRef:
  """The layer whose output the final linear classifier reads.

  Skips ``Flatten`` and ``Dropout`` layers just before the classifier, whose
  outputs are the same representation reshaped (or, in eval mode,
  unchanged): for the ``InvertibleCNN`` it is ``'down2_lrelu'``, for the MLP
  ``'fc1_relu'``.

  Args:
    model: a layer chain ending with an ``nnx.Linear``: one of our
      ``NamedSequential`` models or any ``nnx.Sequential``.

  Returns:
    The layer's name, or its index (``>= 0``) for a model without names.

  Raises:
    ValueError: if the model is not a layer chain ending with an
      ``nnx.Linear``, or has no layer before it.

  Example:
    >>> from flax import nnx
    >>> from bort_jax.models import create_model
    >>> from bort_jax.explain import classifier_input_layer
    >>> classifier_input_layer(create_model('mlp', num_classes=10, rngs=nnx.Rngs(0)))
    'fc1_relu'
  """
  layers, names = chain.layer_chain(model)
  if not layers or not isinstance(layers[-1], nnx.Linear):
    last = chain.layer_label(model, len(layers) - 1) if layers else 'nothing'
    raise ValueError(
        f'the last layer, {last}, is not a linear classifier (nnx.Linear)'
    )
  for i in range(len(layers) - 2, -1, -1):
    if not isinstance(layers[i], (Flatten, nnx.Dropout)):
      return i if names is None else names[i]
  raise ValueError('the model has no layer before its classifier')


def explainable_adversarial(
    model: Any,
    x: jax.Array,
    targets: jax.Array,
    *,
    mode: Literal['classifier', 'example'] = 'classifier',
    target_examples: jax.Array | None = None,
    margin: float = 1.0,
    max_scale: float = 1024.0,
    num_scales: int = 21,
    step_fraction: float = 0.5,
    num_steps: int = 3,
    layer_name: inverse.LayerSpec = None,
    classifier: tuple[Any, Any] | None = None,
    method: inverse.Method = 'transpose',
    scaling: inverse.Scaling = 'auto',
    inverse_options: Mapping[str, Any] | None = None,
    clip_min: float | None = None,
    clip_max: float | None = None,
) -> jax.Array:
  r"""Explainable adversarial samples from Bort's invertibility (our design).

  See the module docstring for the procedure. No gradient of the network and
  no extra parameter or training: only the forward pass, the classifier's
  weights and the backtracking map.

  Args:
    model: a classifier ``model(x) -> logits``: a layer chain ending with a
      linear classifier (ours, any ``nnx.Sequential``), or any module or
      function with the representation given by ``layer_name`` (see
      :func:`~bort_jax.explain.inverse.reconstruct`).
    x: ``[N, ...]`` inputs.
    targets: ``[N]`` target classes.
    mode: ``'classifier'`` (move along :math:`w_t - w_c`) or ``'example'``
      (move toward ``target_examples``' representations).
    target_examples: ``[N, ...]`` one input of the target class per example
      (``mode='example'`` only).
    margin: ``'classifier'`` mode: the logit margin :math:`f_t - f_c` aimed
      for.
    max_scale: ``'classifier'`` mode: the largest step scale searched.
    num_scales: ``'classifier'`` mode: scales in the geometric grid
      ``[1, max_scale]``.
    step_fraction: ``'example'`` mode: :math:`\beta`, the fraction of the
      remaining way to :math:`z_t` covered by each step.
    num_steps: iterations.
    layer_name: the representation moved: a chain's layer name or index
      (default: :func:`classifier_input_layer`; in ``'classifier'`` mode it
      must be the classifier's input), or a function from the input to it.
    classifier: ``(kernel [features, classes], bias or None)`` of the linear
      classifier that reads the representation; taken from a chain's last
      layer when omitted, needed when ``layer_name`` is a function
      (``'classifier'`` mode).
    method: the layer inverses of the backtracking map, ``'transpose'``
      (the paper's) or ``'pinv'`` (least squares).
    scaling: layer-inverse scaling of the backtracking map.
    inverse_options: more keyword arguments of
      :func:`~bort_jax.explain.inverse.reconstruct` (e.g. ``maxiter``).
    clip_min, clip_max: valid input range.

  Returns:
    ``[N, ...]`` adversarial inputs.

  Raises:
    ValueError: bad mode, layer, shapes, or missing ``target_examples``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from bort_jax.models import create_model
    >>> from bort_jax.explain import explainable_adversarial
    >>> model = create_model('mlp', num_classes=10, rngs=nnx.Rngs(0))
    >>> x = jnp.ones((2, 28, 28, 1))
    >>> explainable_adversarial(model, x, jnp.array([3, 4])).shape
    (2, 28, 28, 1)
  """
  if mode not in ('classifier', 'example'):
    raise ValueError(
        f"unknown mode {mode!r}; valid modes: ['classifier', 'example']"
    )
  if num_steps < 1:
    raise ValueError(f'num_steps must be positive, got {num_steps}')
  _check_labels(x, targets, 'targets')
  is_chain = isinstance(layer_name, (str, int)) or layer_name is None
  if is_chain:
    default_layer = classifier_input_layer(model)
    layer_name = default_layer if layer_name is None else layer_name
    index = chain.resolve_layer(model, layer_name)  # Raises for a bad layer.
  num_classes = jax.eval_shape(model, x).shape[-1]
  g = inverse.backtracking_map(
      model,
      layer_name,
      x.shape[1:],
      x.dtype,
      method=method,
      scaling=scaling,
      **dict(inverse_options or {}),
  )
  forward = inverse.representation_fn(model, layer_name)

  if mode == 'classifier':
    if classifier is None:
      if not is_chain:
        raise ValueError(
            "mode='classifier' with the layer given as a function needs "
            'classifier=(kernel, bias), the weights of the linear classifier '
            "that reads the function's output"
        )
      if index != chain.resolve_layer(model, default_layer):
        raise ValueError(
            "mode='classifier' moves the classifier's input "
            f'({default_layer!r}), not {layer_name!r}'
        )
      last = chain.layer_chain(model).layers[-1]
      classifier = (
          last.kernel[...],
          None if last.bias is None else last.bias[...],
      )
    kernel, bias = classifier
    kernel = jnp.asarray(kernel)
    bias = (
        jnp.zeros((num_classes,), kernel.dtype)
        if bias is None
        else jnp.asarray(bias)
    )
    if kernel.ndim != 2 or kernel.shape[-1] != num_classes:
      raise ValueError(
          f'the classifier kernel must be [features, {num_classes}], got '
          f'{kernel.shape}'
      )
    target_rows = jax.nn.one_hot(targets, num_classes, dtype=bool)

    scales = jnp.geomspace(1.0, max_scale, num_scales).astype(x.dtype)

    def margins(logits):
      rival = jnp.argmax(jnp.where(target_rows, -jnp.inf, logits), axis=-1)
      gap = (
          jnp.take_along_axis(logits, targets[:, None], 1)
          - jnp.take_along_axis(logits, rival[:, None], 1)
      )[:, 0]
      return gap, rival

    def step(_, x_cur):
      z = forward(x_cur)
      flat = z.reshape(z.shape[0], -1)
      logits = jnp.matmul(flat, kernel, precision=lax.Precision.HIGHEST) + bias
      gap, rival = margins(logits)
      direction = (kernel[:, targets] - kernel[:, rival]).T  # [N, D]
      alpha = jnp.maximum(margin - gap, 0.0) / jnp.maximum(
          jnp.sum(jnp.square(direction), axis=-1), 1e-12
      )
      base = g(z)

      def candidate(scale):
        z_new = (flat + (scale * alpha)[:, None] * direction).reshape(z.shape)
        x_new = _clip(x_cur + g(z_new) - base, clip_min, clip_max)
        return x_new, margins(model(x_new))[0]

      candidates, gaps = lax.map(candidate, scales)  # [S, N, ...], [S, N]
      reached = gaps >= margin
      first = jnp.argmax(reached, axis=0)
      best = jnp.where(
          jnp.any(reached, axis=0), first, jnp.argmax(gaps, axis=0)
      )
      chosen = jnp.take_along_axis(
          candidates, best.reshape(1, -1, *([1] * (x.ndim - 1))), axis=0
      )[0]
      return jnp.where(
          (gap >= margin).reshape(-1, *([1] * (x.ndim - 1))), x_cur, chosen
      )

  else:
    if target_examples is None:
      raise ValueError("mode='example' needs target_examples (one per input)")
    if target_examples.shape != x.shape:
      raise ValueError(
          f"target_examples must have the inputs' shape {x.shape}, got "
          f'{target_examples.shape}'
      )
    z_target = forward(target_examples)

    def step(_, x_cur):
      z = forward(x_cur)
      z_new = z + step_fraction * (z_target - z)
      return _clip(x_cur + g(z_new) - g(z), clip_min, clip_max)

  return lax.fori_loop(0, num_steps, step, x)
