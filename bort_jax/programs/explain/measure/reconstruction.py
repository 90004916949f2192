"""Reconstruction: from every layer down to the input, layer by layer, and
by optimisation from the top layer.

Full chain: from the output of every conv/dense layer (after its
activation) down to the input with :func:`bort_jax.explain.reconstruct`,
``method='transpose'`` (the Bort paper's backtracking map) and
``method='pinv'`` (each layer's least-squares inverse, the fair baseline for
a model not trained with Bort). Per layer: each conv/dense layer's input
recovered from its own output with :func:`bort_jax.explain.layer_inverse`.
And the optimisation-based inversion (Mahendran and Vedaldi) from the top
layer. Headline metrics are gain-invariant: Pearson r and the
affine-fitted MSE of the pixel-unit reconstruction, and SSIM of the
reconstruction clipped to [0, 1]; the plain pixel MSE is secondary (it
mostly measures brightness).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bort_jax import explain
from bort_jax.programs.explain import experiment
from bort_jax.programs.explain.measure.common import (
    mean,
    representation_layers,
    timed,
    weighted_layers,
)
from bort_jax.programs.explain.measure.config import MeasureConfig

__all__ = ['measure_reconstruction']

METHODS = ('transpose', 'pinv')


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


def measure_reconstruction(
    model: Any,
    images: jax.Array,
    norm: experiment.Normalization,
    config: MeasureConfig,
    key: jax.Array,
    *,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, float]]:
  """Every reconstruction of the first test images, scored.

  Args:
    model: the trained model (a ``NamedSequential``).
    images: ``[N, H, W, C]`` normalised test images.
    norm: the data normalisation.
    config: how many examples, CG iterations and inversion steps.
    key: the starts of the optimisation-based inversion.
    log: progress messages.

  Returns:
    ``(results, arrays, timings)``: the mean scores (``chain``,
    ``per_layer``, ``inversion``), the figure's reconstructions from every
    layer (``reconstruction``) and by optimisation (``inversion``), and the
    seconds of the chains and the inversion.
  """
  n = min(config.num_reconstruction, images.shape[0])
  n_pinv = min(config.num_pinv, n)
  m = min(config.num_inversion, n)
  x = images[:n]
  layers = tuple(representation_layers(model))
  chain, figure, timings = _chain_scores(model, x, norm, config, layers)
  per_layer = _per_layer_scores(model, x[:n_pinv], config)
  inversion, p_inv, timings['inversion'] = _inversion_scores(
      model, x[:m], norm, config, key, layers[-1]
  )
  results = {
      'top_layer': layers[-1],
      'layers': list(layers),
      'num_examples': n,
      'num_pinv_examples': n_pinv,
      'pinv_maxiter': config.pinv_maxiter,
      'chain': chain,
      'per_layer': per_layer,
      'inversion': {
          'layer': layers[-1],
          'num_examples': m,
          'steps': config.inversion_steps,
          **inversion,
      },
  }
  arrays = {
      'reconstruction': figure,
      'inversion': np.asarray(p_inv[: config.num_figure_examples]),
  }
  top = layers[-1]
  log(
      f'    reconstruction: {top} transpose r '
      f'{chain["transpose"][top]["pearson_r"]:.3f}, pinv r '
      f'{chain["pinv"][top]["pearson_r"]:.3f}, optimisation r '
      f'{inversion["pearson_r"]:.3f}'
  )
  return results, arrays, timings


def _chain_scores(
    model: Any,
    x: jax.Array,
    norm: experiment.Normalization,
    config: MeasureConfig,
    layers: tuple[str, ...],
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, float]]:
  """Scores of the full chain from every layer, both methods.

  ``pinv`` reconstructs only the first ``config.num_pinv`` images.
  """
  counts = {'transpose': len(x), 'pinv': min(config.num_pinv, len(x))}
  input_shape = tuple(int(s) for s in x.shape[1:])
  pixels = norm.to_pixels(x)
  chain: dict[str, Any] = {}
  figure: dict[str, np.ndarray] = {}
  timings: dict[str, float] = {}
  for method in METHODS:
    count = counts[method]
    recs, timings[f'chain_{method}'] = timed(
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
      chain[method][layer] = {k: mean(v) for k, v in scores.items()}
      if method == 'transpose':
        figure[layer] = np.asarray(p_hat[: config.num_figure_examples])
  return chain, figure, timings


def _per_layer_scores(
    model: Any, x: jax.Array, config: MeasureConfig
) -> dict[str, Any]:
  """Each weighted layer's input recovered from its own output."""
  input_shape = tuple(int(s) for s in x.shape[1:])
  shapes = explain.chain.layer_shapes(model, input_shape)
  outputs = model.intermediates(x)
  per_layer: dict[str, Any] = {method: {} for method in METHODS}
  for i in weighted_layers(model):
    name = model.layer_names[i]
    h = x if i == 0 else outputs[model.layer_names[i - 1]]
    for method in METHODS:
      h_hat = _one_layer(
          model,
          h,
          index=i,
          input_shape=shapes[i][0],
          method=method,
          maxiter=config.pinv_maxiter,
      )
      per_layer[method][name] = {
          'pearson_r': mean(explain.pearson_r(h_hat, h)),
          'relative_mse': mean(explain.mse(h_hat, h))
          / max(mean(explain.mse(jnp.zeros_like(h), h)), 1e-30),
      }
  return per_layer


def _inversion_scores(
    model: Any,
    x: jax.Array,
    norm: experiment.Normalization,
    config: MeasureConfig,
    key: jax.Array,
    layer: str,
) -> tuple[dict[str, float], jax.Array, float]:
  """Scores of the optimisation-based inversion from ``layer``."""
  x_inv, seconds = timed(
      lambda: _invert(
          model,
          x,
          key,
          layer=layer,
          input_shape=tuple(int(s) for s in x.shape[1:]),
          num_steps=config.inversion_steps,
          bounds=norm.bounds,
      )
  )
  p_inv = norm.to_pixels(x_inv)
  scores = _image_scores(p_inv, norm.to_pixels(x), config.ssim_window)
  return {k: mean(v) for k, v in scores.items()}, p_inv, seconds
