"""Matplotlib figures (PNG) for the explainability report.

Each function takes numpy arrays (pixel units, NHWC, single-channel images
are shown in grey) and a path, writes one PNG and returns the path. They use
the non-interactive Agg backend and close their figures, so they are safe in
scripts and tests.

* :mod:`.images`: grids of images (reconstructions, saliency maps,
  adversarial samples);
* :mod:`.lines`: plots of numbers (Gram matrices, curves, means with their
  95% intervals).
"""

from bort_jax.programs.explain.figures.images import (
    adversarial_figure,
    image_rows_figure,
    reconstruction_figure,
    saliency_figure,
)
from bort_jax.programs.explain.figures.lines import (
    curves_figure,
    gram_figure,
    interval_lines_figure,
)

__all__ = [
    'adversarial_figure',
    'curves_figure',
    'gram_figure',
    'image_rows_figure',
    'interval_lines_figure',
    'reconstruction_figure',
    'saliency_figure',
]
