"""Every measurement on one trained model: reconstruction, saliency and
adversarial samples, in that order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from bort_jax.programs.explain import experiment
from bort_jax.programs.explain.measure.adversarial import measure_adversarial
from bort_jax.programs.explain.measure.config import MeasureConfig
from bort_jax.programs.explain.measure.reconstruction import (
    measure_reconstruction,
)
from bort_jax.programs.explain.measure.saliency import measure_saliency

__all__ = ['measure_model']


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
  key_targets, key_pgd, key_inv = jax.random.split(
      jax.random.key(config.seed), 3
  )
  reconstruction, arrays, timings = measure_reconstruction(
      model, images, norm, config, key_inv, log=log
  )
  saliency, arrays['saliency'], sat_timings = measure_saliency(
      model, untrained, images, labels, norm, config, log=log
  )
  adversarial, arrays['adversarial'] = measure_adversarial(
      model,
      images,
      labels,
      means,
      norm,
      config,
      (key_targets, key_pgd),
      log=log,
  )
  results = {
      'reconstruction': reconstruction,
      'saliency': saliency,
      'adversarial': adversarial,
      'seconds': timings | sat_timings,
  }
  return results, arrays
