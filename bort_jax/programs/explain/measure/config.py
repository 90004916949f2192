"""How many examples each measurement uses, and its settings."""

from __future__ import annotations

import dataclasses

__all__ = ['MeasureConfig']


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
