r"""Metrics for reconstructions, saliency maps and adversarial perturbations.

Every metric is a pure, jittable function of arrays, batched over a leading
example axis: it returns one value per example (average them yourself), so
that medians and spreads can be reported as well as means.

* Reconstruction: :func:`mse`, :func:`psnr`, :func:`ssim` (Gaussian-window
  SSIM of Wang et al. 2004, implemented here).
* Saliency: :func:`deletion_curve`, :func:`insertion_curve`, :func:`auc`
  (Petsiuk et al. 2018) and :func:`mass_on_mask` (how much of a map lies on
  given pixels, e.g. the digit strokes).
* Adversarial: :func:`attack_success`, :func:`perturbation_norms`,
  :func:`cosine_similarity` and :func:`target_likeness`.

Images are NHWC. ``data_range`` is the span of valid pixel values (1.0 for
images in ``[0, 1]``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
  'attack_success',
  'auc',
  'cosine_similarity',
  'deletion_curve',
  'gaussian_window',
  'insertion_curve',
  'mass_on_mask',
  'mse',
  'perturbation_norms',
  'psnr',
  'ssim',
  'target_likeness',
]


def _per_example(x: jax.Array) -> jax.Array:
  return x.reshape(x.shape[0], -1)


def _check_same_shape(x: jax.Array, y: jax.Array, what: str) -> None:
  if x.shape != y.shape:
    raise ValueError(f'{what}: shapes differ, {x.shape} vs {y.shape}')


def mse(x: jax.Array, y: jax.Array) -> jax.Array:
  r"""Mean squared error per example, :math:`\frac1D\sum_i (x_i - y_i)^2`.

  Args:
    x, y: ``[N, ...]`` arrays of the same shape.

  Returns:
    ``[N]``.

  Example:
    >>> import jax.numpy as jnp
    >>> mse(jnp.zeros((1, 2, 2, 1)), jnp.ones((1, 2, 2, 1)))
    Array([1.], dtype=float32)
  """
  _check_same_shape(x, y, 'mse')
  return jnp.mean(jnp.square(_per_example(x) - _per_example(y)), axis=-1)


def psnr(x: jax.Array, y: jax.Array, data_range: float = 1.0) -> jax.Array:
  r"""Peak signal-to-noise ratio per example, :math:`10\log_{10}(R^2/\mathrm{MSE})` dB.

  Args:
    x, y: ``[N, ...]`` arrays of the same shape.
    data_range: :math:`R`, the span of valid values.

  Returns:
    ``[N]`` in decibels (``inf`` for identical examples).

  Example:
    >>> import jax.numpy as jnp
    >>> psnr(jnp.zeros((1, 4)), jnp.full((1, 4), 0.1))  # MSE 0.01 -> 20 dB
    Array([20.], dtype=float32)
  """
  return 10.0 * jnp.log10(data_range**2 / mse(x, y))


def gaussian_window(size: int = 11, sigma: float = 1.5) -> jax.Array:
  """A normalised 1D Gaussian window of ``size`` taps.

  Example:
    >>> float(gaussian_window(11, 1.5).sum())
    1.0
  """
  if size < 1 or size % 2 == 0:
    raise ValueError(f'the window size must be a positive odd number, got {size}')
  offsets = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
  window = jnp.exp(-0.5 * jnp.square(offsets / sigma))
  return window / jnp.sum(window)


def _blur(x: jax.Array, window: jax.Array) -> jax.Array:
  """Separable 'valid' Gaussian filter of every channel of NHWC ``x``."""
  n, h, w, c = x.shape
  planes = jnp.moveaxis(x, -1, 1).reshape(n * c, h, w, 1)
  size = window.shape[0]
  dn = ('NHWC', 'HWIO', 'NHWC')
  planes = lax.conv_general_dilated(
    planes, window.reshape(size, 1, 1, 1), (1, 1), 'VALID', dimension_numbers=dn,
    precision=lax.Precision.HIGHEST)
  planes = lax.conv_general_dilated(
    planes, window.reshape(1, size, 1, 1), (1, 1), 'VALID', dimension_numbers=dn,
    precision=lax.Precision.HIGHEST)
  return jnp.moveaxis(planes.reshape(n, c, *planes.shape[1:3]), 1, -1)


def ssim(
  x: jax.Array,
  y: jax.Array,
  data_range: float = 1.0,
  *,
  window_size: int = 11,
  sigma: float = 1.5,
  k1: float = 0.01,
  k2: float = 0.03,
) -> jax.Array:
  r"""Structural similarity per example (Wang et al. 2004), Gaussian window.

  With local means :math:`\mu`, variances :math:`\sigma^2` and covariance
  :math:`\sigma_{xy}` taken under an 11-tap, :math:`\sigma = 1.5` Gaussian
  window (valid positions only, each channel separately),

  .. math::
    \mathrm{SSIM} = \operatorname{mean}\frac{(2\mu_x\mu_y + C_1)(2\sigma_{xy} + C_2)}
      {(\mu_x^2 + \mu_y^2 + C_1)(\sigma_x^2 + \sigma_y^2 + C_2)},
    \quad C_i = (k_i R)^2.

  Args:
    x, y: ``[N, H, W, C]`` images of the same shape, ``H, W >= window_size``.
    data_range: :math:`R`.
    window_size: Gaussian window taps (odd).
    sigma: Gaussian window width.
    k1, k2: the stabilising constants' factors.

  Returns:
    ``[N]``; 1 for identical images.

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.linspace(0, 1, 2 * 16 * 16).reshape(2, 16, 16, 1)
    >>> ssim(x, x)
    Array([1., 1.], dtype=float32)
  """
  _check_same_shape(x, y, 'ssim')
  if x.ndim != 4:
    raise ValueError(f'ssim expects [N, H, W, C] images, got shape {x.shape}')
  if min(x.shape[1:3]) < window_size:
    raise ValueError(
      f'ssim: images of size {x.shape[1:3]} are smaller than the window ({window_size})')
  x = x.astype(jnp.float32)
  y = y.astype(jnp.float32)
  window = gaussian_window(window_size, sigma)
  c1 = (k1 * data_range) ** 2
  c2 = (k2 * data_range) ** 2
  mu_x, mu_y = _blur(x, window), _blur(y, window)
  var_x = _blur(x * x, window) - mu_x**2
  var_y = _blur(y * y, window) - mu_y**2
  cov = _blur(x * y, window) - mu_x * mu_y
  ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
    (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
  return jnp.mean(_per_example(ssim_map), axis=-1)


def auc(curve: jax.Array) -> jax.Array:
  r"""Area under curves sampled at equally spaced points of :math:`[0, 1]`.

  Trapezoidal rule: :math:`\frac1T\sum_{t=0}^{T-1} \frac{c_t + c_{t+1}}2`.

  Args:
    curve: ``[..., T + 1]`` values at fractions ``0, 1/T, ..., 1``.

  Returns:
    ``[...]``.

  Example:
    >>> import jax.numpy as jnp
    >>> auc(jnp.linspace(1.0, 0.0, 11))  # a straight line from 1 to 0
    Array(0.5, dtype=float32)
  """
  if curve.shape[-1] < 2:
    raise ValueError('auc needs at least two points per curve')
  return jnp.mean((curve[..., 1:] + curve[..., :-1]) / 2, axis=-1)


def _reveal_masks(saliency: jax.Array, num_steps: int) -> jax.Array:
  """``[N, T + 1, H, W]``: mask t is True on the ``t/T`` most salient pixels."""
  n, h, w = saliency.shape
  flat = saliency.reshape(n, -1)
  # rank[i] = position of pixel i in the descending order (ties by index).
  order = jnp.argsort(-flat, axis=-1, stable=True)
  rank = jnp.argsort(order, axis=-1)
  counts = jnp.round(jnp.linspace(0, h * w, num_steps + 1)).astype(jnp.int32)
  masks = rank[:, None, :] < counts[None, :, None]
  return masks.reshape(n, num_steps + 1, h, w)


def _perturbation_curve(
  predict_fn: Callable[[jax.Array], jax.Array],
  x: jax.Array,
  saliency: jax.Array,
  labels: jax.Array,
  background: jax.Array,
  num_steps: int,
  insert: bool,
) -> jax.Array:
  if saliency.shape != x.shape[:3]:
    raise ValueError(
      f'saliency maps must have shape [N, H, W] = {x.shape[:3]}, got {saliency.shape}')
  background = jnp.broadcast_to(jnp.asarray(background, x.dtype), x.shape)
  masks = _reveal_masks(saliency, num_steps)[..., None]  # [N, T+1, H, W, 1]

  def one(args):
    image, bg, mask, label = args
    if insert:
      images = jnp.where(mask, image[None], bg[None])
    else:
      images = jnp.where(mask, bg[None], image[None])
    probs = jax.nn.softmax(predict_fn(images).astype(jnp.float32), axis=-1)
    return probs[:, label]

  return lax.map(one, (x, background, masks, labels))


def deletion_curve(
  predict_fn: Callable[[jax.Array], jax.Array],
  x: jax.Array,
  saliency: jax.Array,
  labels: jax.Array,
  *,
  background: jax.Array | float = 0.0,
  num_steps: int = 28,
) -> jax.Array:
  r"""Probability of the label as the most salient pixels are deleted.

  Step :math:`t` replaces the :math:`t/T` most salient pixels (all channels)
  by ``background``. A good saliency map makes the probability fall fast:
  a *low* area under the curve (:func:`auc`) is better.

  Args:
    predict_fn: ``images [B, H, W, C] -> logits [B, K]``.
    x: ``[N, H, W, C]`` images.
    saliency: ``[N, H, W]`` maps (larger = more important).
    labels: ``[N]`` the class whose probability is tracked.
    background: the deleted pixels' value (scalar or broadcastable to ``x``),
      e.g. black.
    num_steps: :math:`T`.

  Returns:
    ``[N, T + 1]`` softmax probabilities (``[:, 0]``: the intact image).

  Example:
    >>> import jax.numpy as jnp
    >>> f = lambda im: jnp.stack([im.sum((1, 2, 3)), -im.sum((1, 2, 3))], -1)
    >>> x = jnp.ones((1, 2, 2, 1))
    >>> deletion_curve(f, x, x[..., 0], jnp.array([0]), num_steps=4).shape
    (1, 5)
  """
  return _perturbation_curve(predict_fn, x, saliency, labels, background, num_steps, False)


def insertion_curve(
  predict_fn: Callable[[jax.Array], jax.Array],
  x: jax.Array,
  saliency: jax.Array,
  labels: jax.Array,
  *,
  background: jax.Array | float = 0.0,
  num_steps: int = 28,
) -> jax.Array:
  r"""Probability of the label as the most salient pixels are inserted.

  Starts from ``background`` and puts back the :math:`t/T` most salient
  pixels of ``x``; a *high* :func:`auc` is better. Arguments and result as
  in :func:`deletion_curve`.
  """
  return _perturbation_curve(predict_fn, x, saliency, labels, background, num_steps, True)


def mass_on_mask(saliency: jax.Array, mask: jax.Array) -> jax.Array:
  r"""Fraction of a non-negative map's mass on masked pixels, per example.

  :math:`\sum_p s_p m_p / \sum_p s_p` (0 for an all-zero map). With ``mask``
  the digit strokes, compare it with the strokes' share of the image (what a
  uniform map gets).

  Args:
    saliency: ``[N, H, W]`` non-negative maps.
    mask: ``[N, H, W]`` booleans or weights.

  Returns:
    ``[N]`` in ``[0, 1]``.

  Example:
    >>> import jax.numpy as jnp
    >>> mass_on_mask(jnp.array([[[3.0, 1.0]]]), jnp.array([[[True, False]]]))
    Array([0.75], dtype=float32)
  """
  _check_same_shape(saliency, mask, 'mass_on_mask')
  s = _per_example(saliency)
  total = jnp.sum(s, axis=-1)
  on = jnp.sum(s * _per_example(mask).astype(s.dtype), axis=-1)
  return jnp.where(total > 0, on / jnp.where(total > 0, total, 1.0), 0.0)


def attack_success(
  logits: jax.Array, labels: jax.Array, targets: jax.Array | None = None
) -> jax.Array:
  """Per-example success of an attack, as floats 0/1.

  Untargeted (``targets`` None): the prediction differs from ``labels``.
  Targeted: the prediction equals ``targets``.

  Example:
    >>> import jax.numpy as jnp
    >>> logits = jnp.array([[2.0, 1.0], [0.0, 1.0]])
    >>> attack_success(logits, jnp.array([0, 0]))
    Array([0., 1.], dtype=float32)
  """
  predictions = jnp.argmax(logits, axis=-1)
  if targets is None:
    return (predictions != labels).astype(jnp.float32)
  return (predictions == targets).astype(jnp.float32)


def perturbation_norms(delta: jax.Array, scale: float = 1.0) -> dict[str, jax.Array]:
  r"""L2, L-inf and L0 norms of perturbations, per example.

  Args:
    delta: ``[N, ...]`` perturbations.
    scale: multiplies ``delta`` first (e.g. the data set's std, to measure
      in pixel units perturbations of normalised images).

  Returns:
    ``{'l2', 'linf', 'l0'}`` of ``[N]`` arrays; ``l0`` counts entries with
    magnitude above 1e-6 (after scaling).

  Example:
    >>> import jax.numpy as jnp
    >>> {k: v.tolist() for k, v in perturbation_norms(jnp.array([[3.0, -4.0]])).items()}
    {'l2': [5.0], 'linf': [4.0], 'l0': [2.0]}
  """
  d = _per_example(delta) * scale
  return {
    'l2': jnp.sqrt(jnp.sum(jnp.square(d), axis=-1)),
    'linf': jnp.max(jnp.abs(d), axis=-1),
    'l0': jnp.sum((jnp.abs(d) > 1e-6).astype(jnp.float32), axis=-1),
  }


def cosine_similarity(a: jax.Array, b: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Cosine of the angle between flattened examples, per example.

  Example:
    >>> import jax.numpy as jnp
    >>> cosine_similarity(jnp.array([[1.0, 0.0]]), jnp.array([[2.0, 0.0]]))
    Array([1.], dtype=float32)
  """
  _check_same_shape(a, b, 'cosine_similarity')
  a, b = _per_example(a), _per_example(b)
  norms = jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1)
  return jnp.sum(a * b, axis=-1) / jnp.maximum(norms, eps)


def target_likeness(
  delta: jax.Array,
  sources: jax.Array,
  targets: jax.Array,
  class_means: jax.Array,
) -> jax.Array:
  r"""How much a perturbation looks like "target digit minus source digit".

  :math:`\cos(\delta, \mu_t - \mu_s)`, with :math:`\mu_k` the mean image of
  class :math:`k`. Turning an image of class :math:`s` into one of class
  :math:`t` *visibly* means adding the strokes typical of :math:`t` and
  removing those typical of :math:`s`, which is what
  :math:`\mu_t - \mu_s` shows; a perturbation of unstructured noise (or
  one spread evenly over every pixel, like FGSM's sign pattern) has a
  cosine near 0. It is cheap, needs no second model, and is comparable
  across attacks whatever their perturbation size (the cosine ignores
  scale).

  Args:
    delta: ``[N, H, W, C]`` perturbations (adversarial minus original).
    sources: ``[N]`` true classes.
    targets: ``[N]`` target classes.
    class_means: ``[K, H, W, C]`` mean image of every class.

  Returns:
    ``[N]`` cosines in ``[-1, 1]``.

  Example:
    >>> import jax.numpy as jnp
    >>> means = jnp.array([[[[1.0]], [[0.0]]], [[[0.0]], [[1.0]]]])  # K=2, 2x1
    >>> cos = target_likeness(means[1:] - means[:1], jnp.array([0]), jnp.array([1]), means)
    >>> round(float(cos[0]), 5)
    1.0
  """
  direction = class_means[targets] - class_means[sources]
  return cosine_similarity(delta, direction)
