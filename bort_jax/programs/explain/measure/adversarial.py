"""Adversarial samples: the same targeted PGD-L2 attack on every model.

Success-vs-L2 curves at fixed budgets; the adversarial images at one
budget are kept for the transfer test to another, independently trained
classifier; our backtracking procedure's success, L2 and
target-likeness.
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
from bort_jax.programs.explain.measure.common import mean, per_example, predict
from bort_jax.programs.explain.measure.config import MeasureConfig

__all__ = ['adversarial_budgets', 'measure_adversarial', 'transfer_success']


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
  return mean(predict(model, x_adv) == targets)


def measure_adversarial(
    model: Any,
    images: jax.Array,
    labels: jax.Array,
    means: np.ndarray,
    norm: experiment.Normalization,
    config: MeasureConfig,
    keys: tuple[jax.Array, jax.Array],
    *,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], dict[str, jax.Array]]:
  """The targeted attacks on the first test images, at every budget.

  Args:
    model: the trained model.
    images: ``[N, H, W, C]`` normalised test images.
    labels: ``[N]`` their labels.
    means: ``[K, H, W, C]`` class-mean images, pixel units.
    norm: the data normalisation.
    config: how many examples, the budgets, the PGD steps.
    keys: the keys of the random targets and of PGD's starts.
    log: progress messages.

  Returns:
    ``(results, sample)``: success per budget, the budget of 90% success,
    PGD's and our procedure's scores; and the PGD samples at
    ``config.transfer_budget`` with their targets (``images``,
    ``targets``) for the transfer test.

  Raises:
    ValueError: ``config.transfer_budget`` is not one of its budgets.
  """
  key_targets, key_pgd = keys
  n = min(config.num_adversarial, labels.shape[0])
  xa, ya = images[:n], labels[:n]
  num_classes = int(means.shape[0])
  targets = (
      ya + jax.random.randint(key_targets, ya.shape, 1, num_classes)
  ) % num_classes
  means_j = jnp.asarray(means)
  curve, transfer_images, pgd_likeness = _pgd_curve(
      model, xa, ya, targets, means_j, norm, config, key_pgd
  )
  results = {
      'num_examples': n,
      'attack': 'targeted PGD-L2',
      'pgd_steps': config.pgd_steps,
      'success_by_l2': {f'{b:g}': r for b, r in curve.items()},
      'l2_at_90': adversarial_budgets(curve),
      'transfer_budget': config.transfer_budget,
      'pgd_target_likeness': pgd_likeness,
      'ours': _ours_scores(model, xa, ya, targets, means_j, norm),
  }
  log(
      '    adversarial: success by L2 '
      + ', '.join(f'{b:g}:{r:.2f}' for b, r in curve.items())
  )
  return results, {'images': transfer_images, 'targets': targets}


def _pgd_curve(
    model: Any,
    x: jax.Array,
    labels: jax.Array,
    targets: jax.Array,
    means: jax.Array,
    norm: experiment.Normalization,
    config: MeasureConfig,
    key: jax.Array,
) -> tuple[dict[float, float], jax.Array, float]:
  """PGD's success at every budget; its samples and their target-likeness
  at ``config.transfer_budget``."""
  std = float(norm.std[0])
  curve = {}
  transfer_images = None
  for budget in config.l2_budgets:
    x_adv = _pgd_l2(
        model,
        x,
        targets,
        key,
        budget / std,
        num_steps=config.pgd_steps,
        bounds=norm.bounds,
    )
    curve[budget] = mean(predict(model, x_adv) == targets)
    if budget == config.transfer_budget:
      transfer_images = x_adv
      pgd_likeness = mean(
          explain.target_likeness((x_adv - x) * std, labels, targets, means)
      )
  if transfer_images is None:
    raise ValueError(
        f'transfer_budget {config.transfer_budget} is not one '
        f'of the l2_budgets {config.l2_budgets}'
    )
  return curve, transfer_images, pgd_likeness


def _ours_scores(
    model: Any,
    x: jax.Array,
    labels: jax.Array,
    targets: jax.Array,
    means: jax.Array,
    norm: experiment.Normalization,
) -> dict[str, float]:
  """Success, median L2 and target-likeness of our backtracking procedure."""
  x_ours = _ours(model, x, targets, bounds=norm.bounds)
  delta = (x_ours - x) * float(norm.std[0])
  return {
      'success_rate': mean(predict(model, x_ours) == targets),
      'l2_median': float(
          np.median(per_example(explain.perturbation_norms(delta)['l2']))
      ),
      'target_likeness': mean(
          explain.target_likeness(delta, labels, targets, means)
      ),
  }
