r"""Per-seed measurements of the protocol: one baseline/Bort pair at a time.

For every trained model (and, for the saliency sanity check, the same
architecture at its initialisation) it measures on the first test examples:

1. *Reconstruction.* Full chain: from the output of every conv/dense layer
   (after its activation) down to the input with
   :func:`bort_jax.explain.reconstruct`, ``method='transpose'`` (the Bort
   paper's backtracking map) and ``method='pinv'`` (each layer's
   least-squares inverse, the fair baseline for a model not trained with
   Bort). Per layer: each conv/dense layer's input recovered from its own
   output with :func:`bort_jax.explain.layer_inverse`. And the
   optimisation-based inversion (Mahendran and Vedaldi) from the top layer.
   Headline metrics are gain-invariant: Pearson r and the affine-fitted MSE
   of the pixel-unit reconstruction, and SSIM of the reconstruction clipped
   to [0, 1]; the plain pixel MSE is secondary (it mostly measures
   brightness).
2. *Saliency.* SAT from the top spatial layer and the gradient baselines;
   deletion and insertion AUC; the model-randomisation sanity check, the
   Spearman rank correlation of each method's maps on the trained network
   and on the same network at its initialisation (Adebayo et al. 2018).
3. *Adversarial samples.* The same attack (targeted PGD-L2) on both models
   at fixed L2 budgets (success-vs-L2 curves); the adversarial images at
   one budget are kept for the transfer test to another, independently
   trained classifier; our backtracking procedure's success, L2 and
   target-likeness.

Every number is a mean over the examples; the protocol aggregates seeds.
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

from bort_jax import explain
from bort_jax.programs.explain import experiment

__all__ = [
    'MeasureConfig',
    'adversarial_budgets',
    'measure_model',
    'representation_layers',
    'sanity_correlation',
    'transfer_success',
    'weighted_layers',
]

#: Attributions whose maps are compared in the sanity check.
GRADIENT_METHODS = ('gradient', 'gradient_x_input', 'integrated_gradients')


@dataclasses.dataclass(frozen=True)
class MeasureConfig:
  """How many examples each measurement uses, and its settings.

  Attributes:
    num_reconstruction: examples reconstructed with the transposed weights.
    num_pinv: the first of those also reconstructed with ``pinv`` (each
      conjugate-gradient iteration costs a forward and a backward pass).
    ssim_window: SSIM's Gaussian window (11, the usual; at most the image
      size).
    pinv_maxiter: conjugate-gradient iterations of the convolutions'
      least-squares inverse (``method='pinv'``).
    num_inversion: examples inverted by optimisation (top layer only).
    inversion_steps: Adam steps of that inversion.
    num_saliency: examples of the saliency maps and curves.
    sat_k: SAT's k (``None``: min(256, channels)).
    ig_steps: integrated-gradients intervals.
    deletion_steps: steps of the deletion/insertion curves.
    num_adversarial: examples attacked.
    l2_budgets: PGD-L2 radii in pixel units (images in [0, 1]).
    transfer_budget: the radius whose samples are sent to another model.
    pgd_steps: PGD iterations.
    num_figure_examples: examples kept for the figures.
    seed: PRNG seed (attack targets and starts, inversion starts).
  """

  num_reconstruction: int = 128
  num_pinv: int = 32
  ssim_window: int = 11
  pinv_maxiter: int = 100
  num_inversion: int = 8
  inversion_steps: int = 100
  num_saliency: int = 16
  sat_k: int | None = None
  ig_steps: int = 16
  deletion_steps: int = 28
  num_adversarial: int = 64
  l2_budgets: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
  transfer_budget: float = 3.0
  pgd_steps: int = 10
  num_figure_examples: int = 8
  seed: int = 0


def weighted_layers(model: Any) -> list[int]:
  """Indices of the Dense/Conv layers, the classifier (last one) excluded."""
  indices = [
      i
      for i, layer in enumerate(model.layers)
      if isinstance(layer, (nnx.Linear, nnx.Conv))
  ]
  return indices[:-1]


def representation_layers(model: Any) -> list[str]:
  """The name of each conv/dense layer's output, after its activation.

  Example: ``conv1_lrelu, down1_lrelu, conv2_lrelu, down2_lrelu`` for the
  CNNs, ``fc1_relu`` for the MLP.
  """
  names = model.layer_names
  out = []
  for i in weighted_layers(model):
    follower = model.layers[i + 1] if i + 1 < len(model.layers) else None
    activation = (
        follower is not None
        and not isinstance(follower, (nnx.Linear, nnx.Conv))
        and 'relu' in names[i + 1]
    )
    out.append(names[i + 1] if activation else names[i])
  return out


def _per_example(values: jax.Array) -> np.ndarray:
  return np.asarray(jax.device_get(values), np.float64)


def _mean(values: jax.Array) -> float:
  return float(np.mean(_per_example(values)))


@functools.partial(jax.jit, static_argnames=('window',))
def _image_scores(p_hat, p, window=11):
  """Reconstruction metrics in pixel units (``p`` in [0, 1])."""
  return {
      'pearson_r': explain.pearson_r(p_hat, p),
      'affine_mse': explain.affine_fitted_mse(p_hat, p),
      'ssim': explain.ssim(jnp.clip(p_hat, 0.0, 1.0), p, window_size=window),
      'mse': explain.mse(p_hat, p),
  }


@functools.partial(
    jax.jit, static_argnames=('layers', 'input_shape', 'method', 'maxiter')
)
def _chain(model, x, *, layers, input_shape, method, maxiter):
  outputs = model.intermediates(x)
  return {
      name: explain.reconstruct(
          model,
          outputs[name],
          name,
          input_shape,
          method=method,
          maxiter=maxiter,
      )
      for name in layers
  }


@functools.partial(
    jax.jit, static_argnames=('index', 'input_shape', 'method', 'maxiter')
)
def _one_layer(model, h, *, index, input_shape, method, maxiter):
  y = model.layers[index](h)
  return explain.layer_inverse(
      model.layers[index], y, input_shape, method=method, maxiter=maxiter
  )


@functools.partial(
    jax.jit, static_argnames=('layer', 'input_shape', 'num_steps', 'bounds')
)
def _invert(model, x, key, *, layer, input_shape, num_steps, bounds):
  z = model.forward_to(x, layer)
  return explain.invert_by_optimization(
      model,
      z,
      layer,
      input_shape,
      key,
      num_steps=num_steps,
      clip_min=bounds[0],
      clip_max=bounds[1],
  )


@functools.partial(jax.jit, static_argnames=('layer', 'k'))
def _sat(model, x, *, layer, k):
  return explain.backtracking_saliency(model, x, layer, k=k)


@functools.partial(jax.jit, static_argnames=('method', 'black', 'ig_steps'))
def _gradient_map(model, x, y, *, method, black, ig_steps):
  if method == 'gradient':
    attributions = explain.vanilla_gradient(model, x, y)
  elif method == 'gradient_x_input':
    attributions = explain.gradient_x_input(model, x, y, baseline=black)
  else:
    attributions = explain.integrated_gradients(
        model, x, y, baseline=black, num_steps=ig_steps
    )
  return explain.attribution_map(attributions)


@functools.partial(jax.jit, static_argnames=('black', 'num_steps'))
def _aucs(model, x, smap, y, *, black, num_steps):
  deletion = explain.deletion_curve(
      model, x, smap, y, background=black, num_steps=num_steps
  )
  insertion = explain.insertion_curve(
      model, x, smap, y, background=black, num_steps=num_steps
  )
  return explain.auc(deletion), explain.auc(insertion)


@functools.partial(jax.jit, static_argnames=('num_steps', 'bounds'))
def _pgd_l2(model, x, targets, key, eps, *, num_steps, bounds):
  return explain.pgd(
      model,
      x,
      targets,
      eps,
      key,
      num_steps=num_steps,
      norm='l2',
      targeted=True,
      clip_min=bounds[0],
      clip_max=bounds[1],
  )


@functools.partial(jax.jit, static_argnames=('bounds',))
def _ours(model, x, targets, *, bounds):
  return explain.explainable_adversarial(
      model, x, targets, clip_min=bounds[0], clip_max=bounds[1]
  )


@jax.jit
def _predict(model, x):
  return jnp.argmax(model(x), -1)


def sanity_correlation(
    trained_map: jax.Array, untrained_map: jax.Array
) -> float:
  """Mean Spearman correlation of two models' maps of the same examples.

  The model-randomisation sanity check: near 1 means the maps hardly depend
  on what the network learned (the method fails the check); identical
  models give exactly 1.

  Args:
    trained_map, untrained_map: ``[N, H, W]`` maps of the same inputs.

  Returns:
    The mean over examples of
    :func:`bort_jax.explain.spearman_rank_correlation`.
  """
  return _mean(explain.spearman_rank_correlation(trained_map, untrained_map))


def adversarial_budgets(
    success: dict[float, float], level: float = 0.9
) -> float | None:
  """The smallest L2 at which the success rate reaches ``level``.

  Linear interpolation between the measured budgets; ``None`` when no
  budget reaches it.

  Example:
    >>> adversarial_budgets({1.0: 0.5, 2.0: 1.0})
    1.8
  """
  budgets = sorted(success)
  previous = (0.0, 0.0)
  for budget in budgets:
    rate = success[budget]
    if rate >= level:
      b0, r0 = previous
      if rate == r0:
        return float(budget)
      return float(round(b0 + (level - r0) * (budget - b0) / (rate - r0), 6))
    previous = (budget, rate)
  return None


def transfer_success(model: Any, x_adv: jax.Array, targets: jax.Array) -> float:
  """Share of ``x_adv`` that ``model`` classifies as their targets."""
  return _mean(_predict(model, x_adv) == targets)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
  start = time.perf_counter()
  out = jax.block_until_ready(fn())
  return out, time.perf_counter() - start


def measure_model(
    model: Any,
    untrained: Any,
    images: jax.Array,
    labels: jax.Array,
    means: np.ndarray,
    norm: experiment.Normalization,
    config: MeasureConfig,
    *,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], dict[str, Any]]:
  """Every measurement on one trained model.

  Args:
    model: the trained model (a ``NamedSequential``).
    untrained: the same architecture at its initialisation (the sanity
      check's reference).
    images: ``[N, H, W, C]`` normalised test images.
    labels: ``[N]`` their labels.
    means: ``[K, H, W, C]`` class-mean images, pixel units.
    norm: the data normalisation.
    config: what to compute and on how many examples.
    log: progress messages.

  Returns:
    ``(results, arrays)``: JSON-ready means over the examples, and arrays
    kept for the figures and the transfer test (``'adversarial'``: the
    PGD samples at ``config.transfer_budget`` and their targets).
  """
  input_shape = tuple(int(s) for s in images.shape[1:])
  bounds = norm.bounds
  std = float(norm.std[0])
  f = config.num_figure_examples
  key_targets, key_pgd, key_inv = jax.random.split(
      jax.random.key(config.seed), 3
  )
  results: dict[str, Any] = {}
  arrays: dict[str, Any] = {}
  timings: dict[str, float] = {}

  # 1. Reconstruction.
  n = min(config.num_reconstruction, len(labels))
  x = images[:n]
  pixels = norm.to_pixels(x)
  layers = tuple(representation_layers(model))
  chain: dict[str, Any] = {}
  arrays['reconstruction'] = {}
  n_pinv = min(config.num_pinv, n)
  for method, count in (('transpose', n), ('pinv', n_pinv)):
    recs, timings[f'chain_{method}'] = _timed(
        lambda method=method, count=count: _chain(
            model,
            x[:count],
            layers=layers,
            input_shape=input_shape,
            method=method,
            maxiter=config.pinv_maxiter,
        )
    )
    chain[method] = {}
    for layer in layers:
      p_hat = norm.to_pixels(recs[layer])
      scores = _image_scores(p_hat, pixels[:count], config.ssim_window)
      chain[method][layer] = {k: _mean(v) for k, v in scores.items()}
      if method == 'transpose':
        arrays['reconstruction'][layer] = np.asarray(p_hat[:f])
  per_layer: dict[str, Any] = {m: {} for m in ('transpose', 'pinv')}
  shapes = explain.chain.layer_shapes(model, input_shape)
  outputs = model.intermediates(x[:n_pinv])
  for i in weighted_layers(model):
    name = model.layer_names[i]
    h = x[:n_pinv] if i == 0 else outputs[model.layer_names[i - 1]]
    for method in per_layer:  # noqa: PLC0206
      h_hat = _one_layer(
          model,
          h,
          index=i,
          input_shape=shapes[i][0],
          method=method,
          maxiter=config.pinv_maxiter,
      )
      per_layer[method][name] = {
          'pearson_r': _mean(explain.pearson_r(h_hat, h)),
          'relative_mse': _mean(explain.mse(h_hat, h))
          / max(_mean(explain.mse(jnp.zeros_like(h), h)), 1e-30),
      }
  top = layers[-1]
  m = min(config.num_inversion, n)
  x_inv, timings['inversion'] = _timed(
      lambda: _invert(
          model,
          x[:m],
          key_inv,
          layer=top,
          input_shape=input_shape,
          num_steps=config.inversion_steps,
          bounds=bounds,
      )
  )
  p_inv = norm.to_pixels(x_inv)
  scores = _image_scores(p_inv, pixels[:m], config.ssim_window)
  inversion = {k: _mean(v) for k, v in scores.items()}
  arrays['inversion'] = np.asarray(p_inv[:f])
  results['reconstruction'] = {
      'top_layer': top,
      'layers': list(layers),
      'num_examples': n,
      'num_pinv_examples': n_pinv,
      'pinv_maxiter': config.pinv_maxiter,
      'chain': chain,
      'per_layer': per_layer,
      'inversion': {
          'layer': top,
          'num_examples': m,
          'steps': config.inversion_steps,
          **inversion,
      },
  }
  log(
      f'    reconstruction: {top} transpose r '
      f'{chain["transpose"][top]["pearson_r"]:.3f}, pinv r '
      f'{chain["pinv"][top]["pearson_r"]:.3f}, optimisation r '
      f'{inversion["pearson_r"]:.3f}'
  )

  # 2. Saliency and the model-randomisation sanity check.
  n_sal = min(config.num_saliency, len(labels))
  xs, ys = images[:n_sal], labels[:n_sal]
  black = bounds[0]
  spatial = [
      name for name, (_, out) in zip(model.layer_names, shapes) if len(out) == 3
  ]
  maps: dict[str, Any] = {}
  untrained_maps: dict[str, Any] = {}
  sat_info = None
  if spatial:
    layer = spatial[-1]
    channels = int(shapes[model.layer_index(layer)][1][-1])
    k = explain.saliency.resolve_k(config.sat_k, channels)
    sat_info = {'layer': layer, 'k': k, 'channels': channels}
    maps['sat'], timings['sat'] = _timed(
        lambda: _sat(model, xs, layer=layer, k=k)
    )
    untrained_maps['sat'] = _sat(untrained, xs, layer=layer, k=k)
  for method in GRADIENT_METHODS:
    maps[method] = _gradient_map(
        model, xs, ys, method=method, black=black, ig_steps=config.ig_steps
    )
    untrained_maps[method] = _gradient_map(
        untrained, xs, ys, method=method, black=black, ig_steps=config.ig_steps
    )
  maps['random'] = jax.random.uniform(
      jax.random.key(config.seed + 1), xs.shape[:3]
  )
  saliency: dict[str, Any] = {
      'sat': sat_info,
      'num_examples': n_sal,
      'methods': {},
  }
  for method, smap in maps.items():
    deletion, insertion = _aucs(
        model, xs, smap, ys, black=black, num_steps=config.deletion_steps
    )
    entry = {'deletion_auc': _mean(deletion), 'insertion_auc': _mean(insertion)}
    if method in untrained_maps:
      entry['sanity_spearman'] = sanity_correlation(
          smap, untrained_maps[method]
      )
    saliency['methods'][method] = entry
  results['saliency'] = saliency
  arrays['saliency'] = {k: np.asarray(v[:f]) for k, v in maps.items()}
  if 'sat' in maps:
    log(
        f'    saliency: SAT sanity spearman '
        f'{saliency["methods"]["sat"]["sanity_spearman"]:.3f}'
    )

  # 3. Adversarial samples.
  n_adv = min(config.num_adversarial, len(labels))
  xa, ya = images[:n_adv], labels[:n_adv]
  num_classes = int(means.shape[0])
  targets = (
      ya + jax.random.randint(key_targets, ya.shape, 1, num_classes)
  ) % num_classes
  means_j = jnp.asarray(means)
  curve = {}
  transfer_images = None
  for budget in config.l2_budgets:
    x_adv = _pgd_l2(
        model,
        xa,
        targets,
        key_pgd,
        budget / std,
        num_steps=config.pgd_steps,
        bounds=bounds,
    )
    curve[budget] = _mean(_predict(model, x_adv) == targets)
    if budget == config.transfer_budget:
      transfer_images = x_adv
      pgd_likeness = _mean(
          explain.target_likeness((x_adv - xa) * std, ya, targets, means_j)
      )
  if transfer_images is None:
    raise ValueError(
        f'transfer_budget {config.transfer_budget} is not one '
        f'of the l2_budgets {config.l2_budgets}'
    )
  x_ours = _ours(model, xa, targets, bounds=bounds)
  delta = (x_ours - xa) * std
  ours = {
      'success_rate': _mean(_predict(model, x_ours) == targets),
      'l2_median': float(
          np.median(_per_example(explain.perturbation_norms(delta)['l2']))
      ),
      'target_likeness': _mean(
          explain.target_likeness(delta, ya, targets, means_j)
      ),
  }
  results['adversarial'] = {
      'num_examples': n_adv,
      'attack': 'targeted PGD-L2',
      'pgd_steps': config.pgd_steps,
      'success_by_l2': {f'{b:g}': r for b, r in curve.items()},
      'l2_at_90': adversarial_budgets(curve),
      'transfer_budget': config.transfer_budget,
      'pgd_target_likeness': pgd_likeness,
      'ours': ours,
  }
  arrays['adversarial'] = {'images': transfer_images, 'targets': targets}
  log(
      '    adversarial: success by L2 '
      + ', '.join(f'{b:g}:{r:.2f}' for b, r in curve.items())
  )
  results['seconds'] = timings
  return results, arrays
