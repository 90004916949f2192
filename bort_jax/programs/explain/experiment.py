r"""The MNIST explainability experiment: measure two trained models.

Compares a model trained with ``adamw`` (the baseline) and one trained with
``bort_adamw`` (same recipe otherwise), both trained by the library loop
(:func:`bort_jax.training.loop.train_and_evaluate`), on:

1. reconstruction from every layer with the backtracking map (MSE, PSNR,
   SSIM in pixel units, ``[0, 1]``), and the optimisation-based inversion
   baseline from the top convolutional layer;
2. saliency: SAT, vanilla gradient, gradient x input, integrated gradients;
   deletion and insertion AUC, share of the map on the digit strokes;
3. adversarial samples: ours (backtracking), FGSM, PGD (L-inf and L2):
   success rate, perturbation norms, target-likeness;
4. the orthogonality of every kernel and its Gram matrix.

The procedures are :mod:`bort_jax.explain`'s (see ``docs/method.md``);
:mod:`bort_jax.programs.explain.main` parses the command line and trains or
restores the models, :mod:`bort_jax.programs.explain.report` writes the
report.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import bort_jax
from bort_jax import explain

__all__ = [
  'AnalysisConfig',
  'Normalization',
  'analyse',
  'class_means',
  'evaluate_accuracy',
  'gram_matrices',
  'top_conv_layer',
]


@dataclasses.dataclass(frozen=True)
class Normalization:
  """Per-channel normalisation ``x = (p - mean) / std`` of pixels ``p`` in [0, 1]."""

  mean: tuple[float, ...]
  std: tuple[float, ...]

  def to_pixels(self, x: jax.Array) -> jax.Array:
    return x * jnp.asarray(self.std, x.dtype) + jnp.asarray(self.mean, x.dtype)

  def from_pixels(self, p: jax.Array) -> jax.Array:
    return (p - jnp.asarray(self.mean, p.dtype)) / jnp.asarray(self.std, p.dtype)

  @property
  def bounds(self) -> tuple[float, float]:
    """The normalised values of black and white (single channel)."""
    return ((0.0 - self.mean[0]) / self.std[0], (1.0 - self.mean[0]) / self.std[0])


def evaluate_accuracy(model: nnx.Module, images: jax.Array, labels: jax.Array,
                      batch_size: int = 1000) -> float:
  """Top-1 accuracy of ``model`` on ``images`` (normalised) and ``labels``."""
  predict = jax.jit(lambda m, x: jnp.argmax(m(x), -1))
  correct = 0
  for start in range(0, len(labels), batch_size):
    stop = start + batch_size
    correct += int(jnp.sum(predict(model, images[start:stop]) == labels[start:stop]))
  return correct / len(labels)


def class_means(pixels: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """``[K, H, W, C]`` mean image of every class (``pixels`` in [0, 1])."""
  return np.stack([pixels[labels == k].mean(axis=0) for k in range(num_classes)])


def top_conv_layer(model: Any, input_shape: tuple[int, ...]) -> str:
  """The last layer with a spatial ``(h, w, C)`` output: the top feature map.

  For a model without one (the MLP), the classifier's input layer.
  """
  shapes = explain.layer_input_shapes(model, input_shape)
  spatial = [name for name, (_, out) in zip(model.layer_names, shapes) if len(out) == 3]
  return spatial[-1] if spatial else explain.classifier_input_layer(model)


def gram_matrices(model: Any) -> dict[str, np.ndarray]:
  r"""The Gram matrix of every Dense/Conv layer, on the smaller side.

  With ``M = kernel.reshape(fan_in, units)`` (columns = units): ``M^T M``
  (``units x units``, torch's :math:`W W^\top`: entry ``(i, j)`` is the inner
  product of units i and j) when ``units <= fan_in``, else ``M M^T``
  (``fan_in x fan_in``, torch's :math:`W^\top W`), the only one that a
  bounded orthogonal layer makes a multiple of the identity.

  Returns:
    ``{layer name: square Gram matrix}``.
  """
  grams = {}
  for name, layer in zip(model.layer_names, model.layers):
    if isinstance(layer, (nnx.Linear, nnx.Conv)):
      kernel = np.asarray(layer.kernel[...], np.float64)
      matrix = kernel.reshape(-1, kernel.shape[-1])
      grams[name] = matrix.T @ matrix if matrix.shape[1] <= matrix.shape[0] else (
        matrix @ matrix.T)
  return grams


def _summary(values: Any) -> dict[str, float]:
  """Mean, median and std of the finite values."""
  values = np.asarray(jax.device_get(values), np.float64)
  finite = values[np.isfinite(values)]
  if finite.size == 0:  # E.g. the PSNR of exact reconstructions: inf.
    value = float(values.mean()) if values.size else float('nan')
    return {'mean': value, 'median': value, 'std': 0.0}
  return {'mean': float(finite.mean()), 'median': float(np.median(finite)),
          'std': float(finite.std())}


@dataclasses.dataclass(frozen=True)
class AnalysisConfig:
  """What the analysis computes and on how many examples.

  Attributes:
    num_examples: test examples analysed (reconstruction, saliency,
      adversarial).
    num_figure_examples: examples shown in the figures.
    sat_k: SAT's k (``None``: min(256, channels)).
    sat_impulse: SAT's B.
    sat_tau: SAT's tau.
    ig_steps: integrated-gradients intervals.
    deletion_steps: steps of the deletion/insertion curves.
    inversion_steps: Adam steps of the optimisation-based inversion.
    num_inversion_examples: examples inverted by optimisation (the costly
      part: ``inversion_steps`` forward and backward passes each).
    adversarial_steps: iterations of our adversarial procedure.
    adversarial_margin: its logit margin.
    pgd_steps: PGD iterations.
    linf_eps: L-inf radii of FGSM/PGD, in pixel units ([0, 1]).
    stroke_threshold: pixel intensity above which a pixel is a stroke.
    seed: PRNG seed (targets, PGD starts, inversion starts).
  """

  num_examples: int = 100
  num_figure_examples: int = 8
  sat_k: int | None = None
  sat_impulse: float = explain.SAT_B
  sat_tau: float = explain.SAT_TAU
  ig_steps: int = 32
  deletion_steps: int = 28
  inversion_steps: int = 200
  num_inversion_examples: int = 32
  adversarial_steps: int = 3
  adversarial_margin: float = 1.0
  pgd_steps: int = 20
  linf_eps: tuple[float, ...] = (0.1, 0.2)
  stroke_threshold: float = 0.5
  seed: int = 0


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
  start = time.perf_counter()
  out = jax.block_until_ready(fn())
  return out, time.perf_counter() - start


# Jitted once at module level so that the second model (same structure)
# reuses the first one's compilation. Options are static arguments.

@functools.partial(jax.jit, static_argnames=('input_shape', 'layers', 'scaling'))
def _reconstructions(model, x, *, input_shape, layers, scaling='auto'):
  outputs = model.intermediates(x)
  return {name: explain.reconstruct(model, outputs[name], name, input_shape, scaling=scaling)
          for name in layers}


@functools.partial(jax.jit, static_argnames=('layer', 'input_shape', 'num_steps', 'bounds'))
def _invert(model, x, key, *, layer, input_shape, num_steps, bounds):
  z = model.forward_to(x, layer)
  return explain.invert_by_optimization(
    model, z, layer, input_shape, key, num_steps=num_steps,
    clip_min=bounds[0], clip_max=bounds[1])


@functools.partial(jax.jit, static_argnames=('layer', 'k', 'impulse', 'tau'))
def _sat(model, x, *, layer, k, impulse, tau):
  return explain.backtracking_saliency(model, x, layer, k=k, impulse=impulse, tau=tau)


@functools.partial(jax.jit, static_argnames=('method', 'black', 'ig_steps'))
def _gradient_map(model, x, y, *, method, black, ig_steps):
  if method == 'gradient':
    attributions = explain.vanilla_gradient(model, x, y)
  elif method == 'gradient_x_input':
    attributions = explain.gradient_x_input(model, x, y, baseline=black)
  else:
    attributions = explain.integrated_gradients(
      model, x, y, baseline=black, num_steps=ig_steps)
  return explain.attribution_map(attributions)


@functools.partial(jax.jit, static_argnames=('black', 'num_steps'))
def _curves(model, x, smap, y, *, black, num_steps):
  deletion = explain.deletion_curve(model, x, smap, y, background=black, num_steps=num_steps)
  insertion = explain.insertion_curve(model, x, smap, y, background=black, num_steps=num_steps)
  return deletion, insertion


@functools.partial(jax.jit, static_argnames=('num_steps', 'margin', 'bounds'))
def _ours(model, x, targets, *, num_steps, margin, bounds):
  return explain.explainable_adversarial(
    model, x, targets, num_steps=num_steps, margin=margin,
    clip_min=bounds[0], clip_max=bounds[1])


@functools.partial(jax.jit, static_argnames=('norm', 'bounds'))
def _fgsm(model, x, targets, eps, *, norm, bounds):
  return explain.fgsm(model, x, targets, eps, norm=norm, targeted=True,
                          clip_min=bounds[0], clip_max=bounds[1])


@functools.partial(jax.jit, static_argnames=('norm', 'num_steps', 'bounds'))
def _pgd(model, x, targets, key, eps, *, norm, num_steps, bounds):
  return explain.pgd(model, x, targets, eps, key, num_steps=num_steps, norm=norm,
                         targeted=True, clip_min=bounds[0], clip_max=bounds[1])


@jax.jit
def _logits(model, x):
  return model(x)


@jax.jit
def _image_metrics(p_hat, reference):
  return {'mse': explain.mse(p_hat, reference), 'psnr': explain.psnr(p_hat, reference),
          'ssim': explain.ssim(p_hat, reference)}


@jax.jit
def _attack_metrics(logits, delta_pixels, labels, targets, means):
  norms = explain.perturbation_norms(delta_pixels)
  return {
    'success_targeted': explain.attack_success(logits, labels, targets),
    'success_untargeted': explain.attack_success(logits, labels),
    'l2': norms['l2'], 'linf': norms['linf'],
    'target_likeness': explain.target_likeness(delta_pixels, labels, targets, means),
  }


@jax.jit
def _saliency_metrics(deletion, insertion, smap, strokes):
  return {'deletion_auc': explain.auc(deletion), 'insertion_auc': explain.auc(insertion),
          'mass_on_strokes': explain.mass_on_mask(smap, strokes)}


def analyse(
  models: dict[str, nnx.Module],
  images: jax.Array,
  labels: jax.Array,
  means: np.ndarray,
  norm: Normalization,
  config: AnalysisConfig,
  *,
  log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], dict[str, Any]]:
  """Runs every measurement on every model.

  Args:
    models: ``{'baseline': model, 'bort': model}`` (invertible models of the
      same architecture).
    images: ``[N, H, W, C]`` normalised test images (at least
      ``config.num_examples``).
    labels: ``[N]`` their labels.
    means: ``[K, H, W, C]`` class-mean images in pixel units (training set).
    norm: the data normalisation.
    config: what to compute.
    log: progress messages.

  Returns:
    ``(results, arrays)``: JSON-ready metrics ``results[section][model]``
    and arrays for the figures ``arrays[section][model]`` (pixel units, the
    first ``config.num_figure_examples`` examples).
  """
  n = min(config.num_examples, len(labels))
  x, y = jnp.asarray(images[:n]), jnp.asarray(labels[:n])
  input_shape = tuple(int(s) for s in x.shape[1:])
  pixels = norm.to_pixels(x)
  bounds = norm.bounds
  f = min(config.num_figure_examples, n)
  k_targets, k_pgd, k_inv = jax.random.split(jax.random.key(config.seed), 3)
  num_classes = int(means.shape[0])
  # Targets: a uniformly random class other than the label.
  targets = (y + jax.random.randint(k_targets, y.shape, 1, num_classes)) % num_classes
  strokes = pixels[..., 0] > config.stroke_threshold
  results: dict[str, Any] = {
    'num_examples': n, 'reconstruction': {}, 'inversion': {}, 'saliency': {},
    'adversarial': {}, 'orthogonality': {}}
  arrays: dict[str, Any] = {
    'inputs': np.asarray(pixels[:f]), 'labels': np.asarray(y[:f]),
    'targets': np.asarray(targets[:f]), 'reconstruction': {}, 'inversion': {},
    'saliency': {}, 'adversarial': {}, 'gram': {}, 'top_layer': {}}

  def image_scores(x_hat, reference):
    p_hat = norm.to_pixels(x_hat)
    return {k: _summary(v) for k, v in _image_metrics(p_hat, reference).items()}, p_hat

  for name, model in models.items():
    start = time.perf_counter()
    top = top_conv_layer(model, input_shape)
    arrays['top_layer'][name] = top
    log(f'[{name}] reconstruction from every layer')
    recs = _reconstructions(model, x, input_shape=input_shape, layers=model.layer_names)
    rec_results, rec_arrays = {}, {}
    for layer_name in model.layer_names:  # The jitted dict comes back sorted.
      rec_results[layer_name], p_hat = image_scores(recs[layer_name], pixels)
      rec_arrays[layer_name] = np.asarray(p_hat[:f])
    # The paper's per-unit 1/||w||^2 scaling in every layer, for comparison.
    row = _reconstructions(model, x, input_shape=input_shape, layers=(top,), scaling='row')
    row_scores, p_row = image_scores(row[top], pixels)
    results['reconstruction'][name] = {
      'top_layer': top, 'layers': rec_results, 'top_layer_row_scaling': row_scores}
    arrays['reconstruction'][name] = rec_arrays
    arrays['reconstruction'][name + '_row'] = np.asarray(p_row[:f])

    m = min(config.num_inversion_examples, n)
    log(f'[{name}] optimisation-based inversion from {top!r} ({m} examples)')
    x_inv, seconds = _timed(lambda: _invert(
      model, x[:m], k_inv, layer=top, input_shape=input_shape,
      num_steps=config.inversion_steps, bounds=bounds))
    scores, p_inv = image_scores(x_inv, pixels[:m])
    results['inversion'][name] = {'layer': top, 'num_examples': m, 'seconds': seconds,
                                  **scores}
    arrays['inversion'][name] = np.asarray(p_inv[:f])

    results['orthogonality'][name] = _orthogonality(model)
    arrays['gram'][name] = gram_matrices(model)

    top_shape = explain.layer_input_shapes(model, input_shape)[model.layer_index(top)][1]
    if len(top_shape) == 3:
      log(f'[{name}] saliency from {top!r}')
      results['saliency'][name], arrays['saliency'][name] = _saliency(
        model, x, y, top, int(top_shape[-1]), strokes, bounds, config)
    log(f'[{name}] adversarial samples')
    results['adversarial'][name], arrays['adversarial'][name] = _adversarial(
      model, x, y, targets, means, norm, bounds, k_pgd, config)
    log(f'[{name}] done in {time.perf_counter() - start:.1f} s')
  return results, arrays


def _orthogonality(model: Any) -> dict[str, Any]:
  """:func:`bort_jax.orthogonality_report` keyed by layer name."""
  _, params = nnx.split(model, nnx.Param)
  figures = jax.jit(bort_jax.orthogonality_report)(nnx.to_pure_dict(params))
  by_layer = {}
  for path, values in figures.items():
    index = int(path.split('/')[1])
    by_layer[model.layer_names[index]] = {k: float(v) for k, v in values.items()}
  return by_layer


def _saliency(model, x, y, layer, channels, strokes, bounds, config):
  black = bounds[0]
  k = explain.resolve_k(config.sat_k, channels)
  maps, seconds = {}, {}
  maps['sat'], seconds['sat'] = _timed(lambda: _sat(
    model, x, layer=layer, k=k, impulse=config.sat_impulse, tau=config.sat_tau))
  for method in ('gradient', 'gradient_x_input', 'integrated_gradients'):
    maps[method], seconds[method] = _timed(lambda: _gradient_map(
      model, x, y, method=method, black=black, ig_steps=config.ig_steps))
  maps['random'] = jax.random.uniform(jax.random.key(config.seed + 1), x.shape[:3])
  out = {'layer': layer, 'k': k,
         'stroke_area_fraction': _summary(jnp.mean(strokes, axis=(1, 2)))}
  for method, smap in maps.items():
    deletion, insertion = _curves(model, x, smap, y, black=black,
                                  num_steps=config.deletion_steps)
    scores = _saliency_metrics(deletion, insertion, smap, strokes)
    out[method] = {
      **{k: _summary(v) for k, v in scores.items()},
      'seconds': seconds.get(method, 0.0),
      'deletion_curve_mean': np.asarray(jnp.mean(deletion, 0)).tolist(),
      'insertion_curve_mean': np.asarray(jnp.mean(insertion, 0)).tolist(),
    }
  f = config.num_figure_examples
  return out, {method: np.asarray(smap[:f]) for method, smap in maps.items()}


def _adversarial(model, x, y, targets, means, norm, bounds, key, config):
  std = float(norm.std[0])
  means = jnp.asarray(means)
  f = config.num_figure_examples
  out, figs = {}, {}

  def record(method, x_adv, seconds, **extra):
    logits = _logits(model, x_adv)
    delta = x_adv - x
    scores = _attack_metrics(logits, delta * std, y, targets, means)
    out[method] = {
      'success_rate_targeted': float(jnp.mean(scores['success_targeted'])),
      'success_rate_untargeted': float(jnp.mean(scores['success_untargeted'])),
      'l2': _summary(scores['l2']),
      'linf': _summary(scores['linf']),
      'target_likeness': _summary(scores['target_likeness']),
      'seconds': seconds,
      **extra,
    }
    figs[method] = {'adversarial': np.asarray(norm.to_pixels(x_adv[:f])),
                    'perturbation': np.asarray(delta[:f] * std),
                    'prediction': np.asarray(jnp.argmax(logits[:f], -1))}

  x_ours, seconds = _timed(lambda: _ours(
    model, x, targets, num_steps=config.adversarial_steps,
    margin=config.adversarial_margin, bounds=bounds))
  record('ours', x_ours, seconds)
  for eps_pixels in config.linf_eps:
    eps = eps_pixels / std
    x_adv, seconds = _timed(lambda: _fgsm(model, x, targets, eps, norm='linf',
                                          bounds=bounds))
    record(f'fgsm_linf_{eps_pixels:g}', x_adv, seconds, eps_pixels=eps_pixels)
    x_adv, seconds = _timed(lambda: _pgd(model, x, targets, key, eps, norm='linf',
                                         num_steps=config.pgd_steps, bounds=bounds))
    record(f'pgd_linf_{eps_pixels:g}', x_adv, seconds, eps_pixels=eps_pixels)
  # PGD-L2 with our median L2 norm as budget: the same size, made by gradients.
  l2_budget = out['ours']['l2']['median'] / std  # In normalised units.
  x_adv, seconds = _timed(lambda: _pgd(model, x, targets, key, l2_budget, norm='l2',
                                       num_steps=config.pgd_steps, bounds=bounds))
  record('pgd_l2_matched', x_adv, seconds, eps_pixels=l2_budget * std)
  return out, figs
