"""What every figure shares: the Agg backend, the display of an image, saving."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402 (after choosing the backend)
import numpy as np

__all__ = ['as_display', 'plt', 'save']


def as_display(image: np.ndarray) -> np.ndarray:
  """``[H, W, C]`` pixels as ``imshow`` takes them: 2-D grey or clipped RGB."""
  image = np.asarray(image, np.float32)
  return image[..., 0] if image.shape[-1] == 1 else np.clip(image, 0, 1)


def save(fig, path: str | os.PathLike[str]) -> str:
  """Writes ``fig`` to the PNG ``path`` (folders created), closes it."""
  os.makedirs(os.path.dirname(os.fspath(path)) or '.', exist_ok=True)
  fig.savefig(path, dpi=80, bbox_inches='tight')
  plt.close(fig)
  return os.fspath(path)
