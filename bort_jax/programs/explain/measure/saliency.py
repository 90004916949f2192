"""Saliency: SAT and the gradient baselines, their deletion and insertion
AUC, and the model-randomisation sanity check.

SAT (:func:`bort_jax.explain.backtracking_saliency`) from the top spatial
layer and the gradient baselines; deletion and insertion AUC; the sanity
check is the Spearman rank correlation of each method's maps on the trained
network and on the same network at its initialisation (Adebayo et al.
2018).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from bort_jax import explain
from bort_jax.programs.explain import experiment
from bort_jax.programs.explain.measure.common import mean, timed
from bort_jax.programs.explain.measure.config import MeasureConfig

__all__ = ['GRADIENT_METHODS', 'measure_saliency', 'sanity_correlation']

#: Attributions whose maps are compared in the sanity check.
GRADIENT_METHODS = ('gradient', 'gradient_x_input', 'integrated_gradients')


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
  return mean(explain.spearman_rank_correlation(trained_map, untrained_map))


def measure_saliency(
    model: Any,
    untrained: Any,
    images: jax.Array,
    labels: jax.Array,
    norm: experiment.Normalization,
    config: MeasureConfig,
    *,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, float]]:
  """Every saliency method on the first test images, scored and checked.

  Args:
    model: the trained model.
    untrained: the same architecture at its initialisation.
    images: ``[N, H, W, C]`` normalised test images.
    labels: ``[N]`` their labels.
    norm: the data normalisation (black is the deletion background).
    config: how many examples, SAT's k, IG and curve steps.
    log: progress messages.

  Returns:
    ``(results, arrays, timings)``: SAT's layer and k (``sat``, ``None``
    without a spatial layer) and per method the AUCs and the sanity
    correlation; the figure's maps; the seconds of SAT.
  """
  n = min(config.num_saliency, labels.shape[0])
  xs, ys = images[:n], labels[:n]
  maps, untrained_maps, sat_info, timings = _maps(
      model, untrained, xs, ys, norm, config
  )
  methods = {}
  for method, smap in maps.items():
    deletion, insertion = _aucs(
        model,
        xs,
        smap,
        ys,
        black=norm.bounds[0],
        num_steps=config.deletion_steps,
    )
    entry = {'deletion_auc': mean(deletion), 'insertion_auc': mean(insertion)}
    if method in untrained_maps:
      entry['sanity_spearman'] = sanity_correlation(
          smap, untrained_maps[method]
      )
    methods[method] = entry
  results = {'sat': sat_info, 'num_examples': n, 'methods': methods}
  f = config.num_figure_examples
  arrays = {k: np.asarray(v[:f]) for k, v in maps.items()}
  if 'sat' in maps:
    log(
        f'    saliency: SAT sanity spearman '
        f'{methods["sat"]["sanity_spearman"]:.3f}'
    )
  return results, arrays, timings


def _maps(
    model: Any,
    untrained: Any,
    xs: jax.Array,
    ys: jax.Array,
    norm: experiment.Normalization,
    config: MeasureConfig,
) -> tuple[
    dict[str, Any], dict[str, Any], dict[str, Any] | None, dict[str, float]
]:
  """Both models' maps of every method, and a random map for reference.

  SAT only with a spatial layer: from the top one, k from ``config.sat_k``.
  """
  maps: dict[str, Any] = {}
  untrained_maps: dict[str, Any] = {}
  timings: dict[str, float] = {}
  sat_info = None
  shapes = explain.chain.layer_shapes(
      model, tuple(int(s) for s in xs.shape[1:])
  )
  spatial = [
      name for name, (_, out) in zip(model.layer_names, shapes) if len(out) == 3
  ]
  if spatial:
    layer = spatial[-1]
    channels = int(shapes[model.layer_index(layer)][1][-1])
    k = explain.saliency.resolve_k(config.sat_k, channels)
    sat_info = {'layer': layer, 'k': k, 'channels': channels}
    maps['sat'], timings['sat'] = timed(
        lambda: _sat(model, xs, layer=layer, k=k)
    )
    untrained_maps['sat'] = _sat(untrained, xs, layer=layer, k=k)
  for method in GRADIENT_METHODS:
    for target, net in ((maps, model), (untrained_maps, untrained)):
      target[method] = _gradient_map(
          net,
          xs,
          ys,
          method=method,
          black=norm.bounds[0],
          ig_steps=config.ig_steps,
      )
  maps['random'] = jax.random.uniform(
      jax.random.key(config.seed + 1), xs.shape[:3]
  )
  return maps, untrained_maps, sat_info, timings
