r"""Metrics for reconstructions, saliency maps and adversarial perturbations.

Every metric is a pure, jittable function of arrays, batched over a leading
example axis: it returns one value per example (average them yourself), so
that medians and spreads can be reported as well as means.
:func:`mean_confidence_interval` then summarises values over seeds.

* Reconstruction: :func:`pearson_r` and :func:`affine_fitted_mse` (gain- and
  offset-invariant: a reconstruction that is right up to brightness and
  contrast scores perfectly), :func:`ssim` and :func:`psnr` (from
  ``dm_pix``), :func:`mse`.
* Saliency: :func:`deletion_curve`, :func:`insertion_curve`, :func:`auc`
  (Petsiuk et al. 2018), :func:`mass_on_mask` (how much of a map lies on
  given pixels, e.g. the digit strokes) and
  :func:`spearman_rank_correlation` (the model-randomisation sanity check of
  Adebayo et al. 2018 compares a trained and an untrained network's maps).
* Adversarial: :func:`attack_success`, :func:`perturbation_norms`,
  :func:`cosine_similarity` and :func:`target_likeness`.
* Over seeds: :func:`mean_confidence_interval` (Student t, not jittable).

Images are NHWC. ``data_range`` is the span of valid pixel values (1.0 for
images in ``[0, 1]``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from scipy import stats

__all__ = [
    'affine_fitted_mse',
    'attack_success',
    'auc',
    'cosine_similarity',
    'deletion_curve',
    'insertion_curve',
    'mass_on_mask',
    'mean_confidence_interval',
    'mse',
    'pearson_r',
    'perturbation_norms',
    'psnr',
    'spearman_rank_correlation',
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
    >>> from bort_jax.explain import mse
    >>> mse(jnp.zeros((1, 2, 2, 1)), jnp.ones((1, 2, 2, 1)))
    Array([1.], dtype=float32)
  """
  _check_same_shape(x, y, 'mse')
  return jnp.mean(jnp.square(_per_example(x) - _per_example(y)), axis=-1)


def _centered(x: jax.Array) -> jax.Array:
  """``[N, D]`` float32 rows minus their means."""
  x = _per_example(x).astype(jnp.float32)
  return x - jnp.mean(x, axis=-1, keepdims=True)


def pearson_r(x: jax.Array, y: jax.Array) -> jax.Array:
  r"""Pearson correlation of the flattened examples, per example.

  .. math::
    r = \frac{\sum_i (x_i - \bar x)(y_i - \bar y)}
      {\sqrt{\sum_i (x_i - \bar x)^2 \sum_i (y_i - \bar y)^2}}

  Invariant to gain and offset: :math:`r(\alpha x + \beta, y) =
  \operatorname{sign}(\alpha)\, r(x, y)`, so a reconstruction right up to
  brightness and contrast scores 1. An example with a constant ``x`` or
  ``y`` (no variance) gets 0.

  Args:
    x, y: ``[N, ...]`` arrays of the same shape.

  Returns:
    ``[N]`` float32 in ``[-1, 1]``.

  Example:
    >>> import jax.numpy as jnp
    >>> from bort_jax.explain import pearson_r
    >>> x = jnp.array([[0.0, 1.0, 2.0, 4.0]])
    >>> pearson_r(x, 3 * x + 1), pearson_r(x, -x)
    (Array([1.], dtype=float32), Array([-1.], dtype=float32))
  """
  _check_same_shape(x, y, 'pearson_r')
  xc, yc = _centered(x), _centered(y)
  norms = jnp.sqrt(jnp.sum(xc * xc, axis=-1) * jnp.sum(yc * yc, axis=-1))
  covariance = jnp.sum(xc * yc, axis=-1)
  r = covariance / jnp.where(norms > 0, norms, 1.0)
  return jnp.clip(jnp.where(norms > 0, r, 0.0), -1.0, 1.0)


def affine_fitted_mse(x_hat: jax.Array, x: jax.Array) -> jax.Array:
  r"""MSE of ``x_hat`` to ``x`` after the best gain and offset, per example.

  With :math:`(\alpha, \beta)` the least-squares fit of
  :math:`\alpha \hat x + \beta` to :math:`x` over the example's entries,
  :math:`\alpha = \operatorname{cov}(\hat x, x) / \operatorname{var}(\hat x)`
  and :math:`\beta = \bar x - \alpha \bar{\hat x}`,

  .. math::
    \frac1D \sum_i (\alpha \hat x_i + \beta - x_i)^2
      = \operatorname{var}(x)\,(1 - r^2)

  with :math:`r` the Pearson correlation (:func:`pearson_r`). It is at most
  :func:`mse` (the fit :math:`\alpha = 1, \beta = 0` is one candidate) and
  ``var(x)``, what a constant image scores; it ignores the brightness and
  contrast of a reconstruction. For a constant ``x_hat``, :math:`\alpha = 0`.

  Args:
    x_hat: ``[N, ...]`` reconstructions (or any estimates of ``x``).
    x: ``[N, ...]`` references, same shape.

  Returns:
    ``[N]`` float32.

  Example:
    >>> import jax.numpy as jnp
    >>> from bort_jax.explain import affine_fitted_mse
    >>> x = jnp.array([[0.0, 1.0, 2.0, 3.0]])
    >>> affine_fitted_mse(0.5 * x - 4.0, x)
    Array([0.], dtype=float32)
  """
  _check_same_shape(x_hat, x, 'affine_fitted_mse')
  hc, xc = _centered(x_hat), _centered(x)
  variance = jnp.sum(hc * hc, axis=-1, keepdims=True)
  covariance = jnp.sum(hc * xc, axis=-1, keepdims=True)
  positive = variance > 0
  gain = jnp.where(
      positive, covariance / jnp.where(positive, variance, 1.0), 0.0
  )
  return jnp.mean(jnp.square(gain * hc - xc), axis=-1)


def psnr(x: jax.Array, y: jax.Array, data_range: float = 1.0) -> jax.Array:
  r"""Peak signal-to-noise ratio per example, in dB.

  .. math::
    \mathrm{PSNR} = 10 \log_{10} \frac{R^2}{\mathrm{MSE}}

  Computed by ``dm_pix.psnr`` on the examples divided by :math:`R` (dm_pix
  assumes a range of 1).

  Args:
    x, y: ``[N, ...]`` arrays of the same shape.
    data_range: :math:`R`, the span of valid values.

  Returns:
    ``[N]`` in decibels (``inf`` for identical examples).

  Example:
    >>> import jax.numpy as jnp
    >>> from bort_jax.explain import psnr
    >>> psnr(jnp.zeros((1, 4)), jnp.full((1, 4), 0.1))  # MSE 0.01 -> 20 dB
    Array([20.], dtype=float32)
  """
  _check_same_shape(x, y, 'psnr')

  # dm_pix wants [N, H, W, C]; the MSE is over all of an example's entries.
  def as_images(a):
    return _per_example(a).astype(jnp.float32)[:, :, None, None] / data_range

  return dm_pix.psnr(as_images(x), as_images(y))


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
  r"""Structural similarity per example (Wang et al. 2004), by ``dm_pix.ssim``.

  With local means :math:`\mu`, variances :math:`\sigma^2` and covariance
  :math:`\sigma_{xy}` taken under an 11-tap, :math:`\sigma = 1.5` Gaussian
  window (valid positions only, each channel separately),

  .. math::
    \mathrm{SSIM} = \operatorname{mean}
      \frac{(2\mu_x\mu_y + C_1)(2\sigma_{xy} + C_2)}
      {(\mu_x^2 + \mu_y^2 + C_1)(\sigma_x^2 + \sigma_y^2 + C_2)},
    \quad C_i = (k_i R)^2.

  dm_pix floors the local variances at a tiny positive value and clips the
  covariance to :math:`|\sigma_{xy}| \le \sigma_x\sigma_y`. SSIM is not
  gain-invariant; compare reconstructions clipped to the valid range
  (``jnp.clip(x_hat, 0, R)``).

  Args:
    x, y: ``[N, H, W, C]`` images of the same shape, ``H, W >= window_size``.
    data_range: :math:`R`.
    window_size: Gaussian window taps.
    sigma: Gaussian window width.
    k1, k2: the stabilising constants' factors.

  Returns:
    ``[N]``; 1 for identical images.

  Raises:
    ValueError: for shapes that differ, are not ``[N, H, W, C]``, or are
      smaller than the window.

  Example:
    >>> import jax.numpy as jnp
    >>> from bort_jax.explain import ssim
    >>> x = jnp.linspace(0, 1, 2 * 16 * 16).reshape(2, 16, 16, 1)
    >>> ssim(x, x)
    Array([1., 1.], dtype=float32)
  """
  _check_same_shape(x, y, 'ssim')
  if x.ndim != 4:
    raise ValueError(f'ssim expects [N, H, W, C] images, got shape {x.shape}')
  if min(x.shape[1:3]) < window_size:
    raise ValueError(
        f'ssim: images of size {x.shape[1:3]} are smaller than the window '
        f'({window_size})'
    )
  return _dm_pix_ssim(
      x.astype(jnp.float32),
      y.astype(jnp.float32),
      data_range,
      window_size=window_size,
      sigma=sigma,
      k1=k1,
      k2=k2,
  )


@functools.partial(
    jax.jit, static_argnames=('window_size', 'sigma', 'k1', 'k2')
)
def _dm_pix_ssim(x, y, data_range, *, window_size, sigma, k1, k2):
  # One compiled computation: dm_pix's filters run op by op otherwise.
  return dm_pix.ssim(
      x,
      y,
      max_val=data_range,
      filter_size=window_size,
      filter_sigma=sigma,
      k1=k1,
      k2=k2,
  )


def _average_ranks(values: jax.Array) -> jax.Array:
  """1-based ranks of a 1D array; tied values share their average rank."""
  ordered = jnp.sort(values)
  below = jnp.searchsorted(ordered, values, side='left')
  up_to = jnp.searchsorted(ordered, values, side='right')
  # Ties occupy ranks below + 1 .. up_to; their mean is (below + 1 + up_to) / 2.
  return (below + 1 + up_to).astype(jnp.float32) / 2


def spearman_rank_correlation(a: jax.Array, b: jax.Array) -> jax.Array:
  r"""Spearman rank correlation of the flattened examples, per example.

  The Pearson correlation (:func:`pearson_r`) of the ranks of the entries,
  :math:`\rho = r(\operatorname{rank}(a), \operatorname{rank}(b))`. Tied
  entries (common in saliency maps: zeros, thresholded masks) get the
  average of the ranks they span, as in ``scipy.stats.spearmanr``. It is
  invariant to any strictly increasing transform of either map. An example
  whose entries are all equal gets 0.

  The model-randomisation sanity check (Adebayo et al. 2018) reports it
  between the saliency maps of a trained and an untrained network: a method
  that explains the model should give a low value; one near 1 means the
  maps do not depend on what the network learned.

  Args:
    a, b: ``[N, ...]`` maps of the same shape.

  Returns:
    ``[N]`` float32 in ``[-1, 1]``.

  Example:
    >>> import jax.numpy as jnp
    >>> from bort_jax.explain import spearman_rank_correlation
    >>> a = jnp.array([[0.1, 0.5, 0.2, 0.9]])
    >>> spearman_rank_correlation(a, jnp.exp(10 * a))
    Array([1.], dtype=float32)
  """
  _check_same_shape(a, b, 'spearman_rank_correlation')
  return _spearman(_per_example(a), _per_example(b))


@jax.jit
def _spearman(a: jax.Array, b: jax.Array) -> jax.Array:
  ranks = jax.vmap(_average_ranks)
  return pearson_r(ranks(a), ranks(b))


def mean_confidence_interval(
    values: Sequence[float] | np.ndarray | jax.Array,
    confidence: float = 0.95,
    axis: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
  r"""Mean and half-width of the Student-t confidence interval of the mean.

  For :math:`n` values (e.g. one per seed) with mean :math:`\bar v` and
  sample standard deviation :math:`s` (:math:`n - 1` in the denominator),

  .. math::
    \bar v \pm t_{(1 + c)/2,\, n - 1}\, \frac{s}{\sqrt n}

  with :math:`t_{q, k}` the :math:`q` quantile of Student's t distribution
  with :math:`k` degrees of freedom (``scipy.stats.t``; scipy comes with
  JAX). It assumes the values are independent draws from a roughly normal
  distribution; with 3 seeds, :math:`t_{0.975, 2} = 4.30`. Host-side (numpy),
  not jittable.

  Args:
    values: the values, the reduced axis of length :math:`n \ge 1`.
    confidence: :math:`c`, in ``(0, 1)``.
    axis: the axis holding the samples.

  Returns:
    ``(mean, half_width)``, numpy float64 arrays of the remaining shape (0-d
    for a 1D input). The half-width is ``nan`` for a single value: one seed
    gives no interval.

  Raises:
    ValueError: for an empty sample or a confidence outside ``(0, 1)``.

  Example:
    >>> from bort_jax.explain import mean_confidence_interval
    >>> mean, half = mean_confidence_interval([1.0, 2.0, 3.0])
    >>> float(mean), round(float(half), 4)  # t_{0.975, 2} * 1 / sqrt(3)
    (2.0, 2.4841)
  """
  if not 0.0 < confidence < 1.0:
    raise ValueError(f'confidence must be in (0, 1), got {confidence}')
  values = np.asarray(values, dtype=np.float64)
  n = values.shape[axis] if values.ndim else 1
  if values.ndim == 0:
    values = values[None]
  if n == 0:
    raise ValueError('mean_confidence_interval needs at least one value')
  mean = np.mean(values, axis=axis)
  if n == 1:
    return mean, np.full_like(mean, np.nan)
  standard_error = np.std(values, axis=axis, ddof=1) / np.sqrt(n)
  quantile = stats.t.ppf((1.0 + confidence) / 2.0, df=n - 1)
  return mean, quantile * standard_error


def auc(curve: jax.Array) -> jax.Array:
  r"""Area under curves sampled at equally spaced points of :math:`[0, 1]`.

  Trapezoidal rule: :math:`\frac1T\sum_{t=0}^{T-1} \frac{c_t + c_{t+1}}2`.

  Args:
    curve: ``[..., T + 1]`` values at fractions ``0, 1/T, ..., 1``.

  Returns:
    ``[...]``.

  Example:
    >>> import jax.numpy as jnp
    >>> from bort_jax.explain import auc
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
        f'saliency maps must have shape [N, H, W] = {x.shape[:3]}, got {saliency.shape}'
    )
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
    >>> from bort_jax.explain import deletion_curve
    >>> f = lambda im: jnp.stack([im.sum((1, 2, 3)), -im.sum((1, 2, 3))], -1)
    >>> x = jnp.ones((1, 2, 2, 1))
    >>> deletion_curve(f, x, x[..., 0], jnp.array([0]), num_steps=4).shape
    (1, 5)
  """
  return _perturbation_curve(
      predict_fn, x, saliency, labels, background, num_steps, False
  )


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
  return _perturbation_curve(
      predict_fn, x, saliency, labels, background, num_steps, True
  )


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
    >>> from bort_jax.explain import mass_on_mask
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
    >>> from bort_jax.explain import attack_success
    >>> logits = jnp.array([[2.0, 1.0], [0.0, 1.0]])
    >>> attack_success(logits, jnp.array([0, 0]))
    Array([0., 1.], dtype=float32)
  """
  predictions = jnp.argmax(logits, axis=-1)
  if targets is None:
    return (predictions != labels).astype(jnp.float32)
  return (predictions == targets).astype(jnp.float32)


def perturbation_norms(
    delta: jax.Array, scale: float = 1.0
) -> dict[str, jax.Array]:
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
    >>> from bort_jax.explain import perturbation_norms
    >>> {k: v.tolist() for k, v in perturbation_norms(jnp.array([[3.0, -4.0]])).items()}
    {'l2': [5.0], 'linf': [4.0], 'l0': [2.0]}
  """
  d = _per_example(delta) * scale
  return {
      'l2': jnp.sqrt(jnp.sum(jnp.square(d), axis=-1)),
      'linf': jnp.max(jnp.abs(d), axis=-1),
      'l0': jnp.sum((jnp.abs(d) > 1e-6).astype(jnp.float32), axis=-1),
  }


def cosine_similarity(
    a: jax.Array, b: jax.Array, eps: float = 1e-12
) -> jax.Array:
  """Cosine of the angle between flattened examples, per example.

  Example:
    >>> import jax.numpy as jnp
    >>> from bort_jax.explain import cosine_similarity
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
    >>> from bort_jax.explain import target_likeness
    >>> means = jnp.array([[[[1.0]], [[0.0]]], [[[0.0]], [[1.0]]]])  # K=2, 2x1
    >>> cos = target_likeness(means[1:] - means[:1], jnp.array([0]), jnp.array([1]), means)
    >>> round(float(cos[0]), 5)
    1.0
  """
  direction = class_means[targets] - class_means[sources]
  return cosine_similarity(delta, direction)
