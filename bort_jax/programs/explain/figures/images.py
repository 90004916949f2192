"""Image grids: rows of images, reconstructions, saliency maps, attacks."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from bort_jax.programs.explain.figures.common import as_display, plt, save

__all__ = [
    'adversarial_figure',
    'image_rows_figure',
    'reconstruction_figure',
    'saliency_figure',
]


def image_rows_figure(
    rows: Sequence[tuple[str, np.ndarray]],
    path: str | os.PathLike[str],
    *,
    title: str = '',
    cmap: str = 'gray',
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    symmetric: bool = False,
    column_titles: Sequence[str] | None = None,
) -> str:
  """A grid of images: one labelled row per ``(label, [N, H, W, C])`` entry.

  Args:
    rows: ``(row label, images)``; a row with fewer images than the longest
      leaves its last cells empty.
    path: PNG file to write.
    title: figure title.
    cmap: colour map for single-channel images.
    vmin, vmax: colour range (``None``: per image).
    symmetric: per-row colour range ``[-m, m]`` with ``m`` the row's largest
      magnitude (for signed images such as perturbations).
    column_titles: optional titles of the columns.

  Returns:
    ``path``.
  """
  n = max(len(images) for _, images in rows)
  fig, axes = plt.subplots(
      len(rows),
      n,
      figsize=(1.1 * n + 1.6, 1.15 * len(rows) + 0.5),
      squeeze=False,
  )
  for r, (label, images) in enumerate(rows):
    lo, hi = vmin, vmax
    if symmetric:
      m = float(np.max(np.abs(images))) or 1.0
      lo, hi = -m, m
    for c in range(n):
      ax = axes[r, c]
      if c < len(images):
        ax.imshow(
            as_display(images[c]),
            cmap=cmap,
            vmin=lo,
            vmax=hi,
            interpolation='nearest',
        )
      else:
        ax.set_frame_on(False)
      ax.set_xticks([])
      ax.set_yticks([])
      if c == 0:
        ax.set_ylabel(label, rotation=0, ha='right', va='center', fontsize=8)
      if r == 0 and column_titles is not None:
        ax.set_title(column_titles[c], fontsize=8)
  if title:
    fig.suptitle(title, fontsize=10)
  return save(fig, path)


def reconstruction_figure(
    inputs: np.ndarray,
    reconstructions: Mapping[str, np.ndarray],
    path: str | os.PathLike[str],
    *,
    title: str = '',
) -> str:
  """Inputs and their reconstruction from each layer (one row per layer).

  Shown on the fixed pixel range [0, 1] (values outside are clipped in the
  display only), so that a reconstruction's brightness and contrast errors
  are visible.
  """
  rows = [('input', inputs)] + [
      (name, images) for name, images in reconstructions.items()
  ]
  return image_rows_figure(rows, path, title=title)


def saliency_figure(
    inputs: np.ndarray,
    maps: Mapping[str, np.ndarray],
    path: str | os.PathLike[str],
    *,
    title: str = '',
    alpha: float = 0.6,
) -> str:
  """Saliency maps overlaid on the inputs (one row per ``{label: [N, H, W]}``).

  Each map is scaled to its own maximum and drawn with the ``jet`` colour
  map over the grey input.
  """
  n = len(inputs)
  labels = list(maps)
  fig, axes = plt.subplots(
      len(labels) + 1,
      n,
      figsize=(1.1 * n + 2.2, 1.15 * (len(labels) + 1)),
      squeeze=False,
  )
  for c in range(n):
    axes[0, c].imshow(as_display(inputs[c]), cmap='gray', vmin=0, vmax=1)
  axes[0, 0].set_ylabel(
      'input', rotation=0, ha='right', va='center', fontsize=8
  )
  for r, label in enumerate(labels, start=1):
    for c in range(n):
      smap = np.asarray(maps[label][c], np.float32)
      peak = float(smap.max()) or 1.0
      axes[r, c].imshow(as_display(inputs[c]), cmap='gray', vmin=0, vmax=1)
      axes[r, c].imshow(smap / peak, cmap='jet', alpha=alpha, vmin=0, vmax=1)
    axes[r, 0].set_ylabel(
        label, rotation=0, ha='right', va='center', fontsize=8
    )
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
  if title:
    fig.suptitle(title, fontsize=10)
  return save(fig, path)


def adversarial_figure(
    inputs: np.ndarray,
    attacks: Mapping[str, Mapping[str, np.ndarray]],
    labels: np.ndarray,
    targets: np.ndarray,
    path: str | os.PathLike[str],
    *,
    title: str = '',
) -> str:
  """Original images, then per attack its adversarial images and perturbations.

  Args:
    inputs: ``[N, H, W, C]`` originals (pixel units).
    attacks: ``{name: {'adversarial': [N,H,W,C], 'perturbation': [N,H,W,C],
      'prediction': [N]}}``.
    labels: ``[N]`` true classes.
    targets: ``[N]`` target classes.
    path: PNG file.
    title: figure title.

  Perturbations are drawn with a diverging map, each row scaled to its own
  largest magnitude (red: added ink, blue: removed).
  """
  n = len(inputs)
  names = list(attacks)
  fig, axes = plt.subplots(
      2 * len(names) + 1,
      n,
      figsize=(1.15 * n + 2.4, 1.2 * (2 * len(names) + 1)),
      squeeze=False,
  )
  for c in range(n):
    axes[0, c].imshow(as_display(inputs[c]), cmap='gray', vmin=0, vmax=1)
    axes[0, c].set_title(f'{int(labels[c])}->{int(targets[c])}', fontsize=8)
  axes[0, 0].set_ylabel(
      'input\n(label->target)', rotation=0, ha='right', va='center', fontsize=8
  )
  for i, name in enumerate(names):
    attack = attacks[name]
    row = 1 + 2 * i
    m = float(np.max(np.abs(attack['perturbation']))) or 1.0
    for c in range(n):
      axes[row, c].imshow(
          as_display(attack['adversarial'][c]), cmap='gray', vmin=0, vmax=1
      )
      axes[row, c].set_title(f'pred {int(attack["prediction"][c])}', fontsize=7)
      axes[row + 1, c].imshow(
          as_display(attack['perturbation'][c]),
          cmap='seismic',
          vmin=-m,
          vmax=m,
      )
    axes[row, 0].set_ylabel(
        name, rotation=0, ha='right', va='center', fontsize=8
    )
    axes[row + 1, 0].set_ylabel(
        f'{name}\nperturbation', rotation=0, ha='right', va='center', fontsize=8
    )
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
  if title:
    fig.suptitle(title, fontsize=10)
  return save(fig, path)
