"""Matplotlib figures (PNG) for the explainability report.

Each function takes numpy arrays (pixel units, NHWC, single-channel images
are shown in grey) and a path, writes one PNG and returns the path. They use
the non-interactive Agg backend and close their figures, so they are safe in
scripts and tests.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np

__all__ = [
    'adversarial_figure',
    'curves_figure',
    'gram_figure',
    'image_rows_figure',
    'interval_lines_figure',
    'reconstruction_figure',
    'saliency_figure',
]


def _as_display(image: np.ndarray) -> np.ndarray:
  image = np.asarray(image, np.float32)
  return image[..., 0] if image.shape[-1] == 1 else np.clip(image, 0, 1)


def _save(fig, path: str | os.PathLike[str]) -> str:
  os.makedirs(os.path.dirname(os.fspath(path)) or '.', exist_ok=True)
  fig.savefig(path, dpi=80, bbox_inches='tight')
  plt.close(fig)
  return os.fspath(path)


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
            _as_display(images[c]),
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
  return _save(fig, path)


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
    axes[0, c].imshow(_as_display(inputs[c]), cmap='gray', vmin=0, vmax=1)
  axes[0, 0].set_ylabel(
      'input', rotation=0, ha='right', va='center', fontsize=8
  )
  for r, label in enumerate(labels, start=1):
    for c in range(n):
      smap = np.asarray(maps[label][c], np.float32)
      peak = float(smap.max()) or 1.0
      axes[r, c].imshow(_as_display(inputs[c]), cmap='gray', vmin=0, vmax=1)
      axes[r, c].imshow(smap / peak, cmap='jet', alpha=alpha, vmin=0, vmax=1)
    axes[r, 0].set_ylabel(
        label, rotation=0, ha='right', va='center', fontsize=8
    )
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
  if title:
    fig.suptitle(title, fontsize=10)
  return _save(fig, path)


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
    axes[0, c].imshow(_as_display(inputs[c]), cmap='gray', vmin=0, vmax=1)
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
          _as_display(attack['adversarial'][c]), cmap='gray', vmin=0, vmax=1
      )
      axes[row, c].set_title(f'pred {int(attack["prediction"][c])}', fontsize=7)
      axes[row + 1, c].imshow(
          _as_display(attack['perturbation'][c]),
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
  return _save(fig, path)


def gram_figure(
    grams: Mapping[str, Mapping[str, np.ndarray]],
    path: str | os.PathLike[str],
    *,
    title: str = '',
) -> str:
  """Heatmaps of every layer's Gram matrix, one row per model.

  Args:
    grams: ``{model: {layer: square Gram matrix}}`` (e.g. from
      :func:`bort_jax.programs.explain.experiment.gram_matrices`: between units, or
      between inputs for overcomplete layers).
    path: PNG file.
    title: figure title.

  Each Gram is divided by the mean of its diagonal and drawn on ``[-1, 1]``:
  a bounded orthogonal layer is the identity (a bright diagonal on grey).
  """
  models = list(grams)
  layers = list(grams[models[0]])
  fig, axes = plt.subplots(
      len(models),
      len(layers),
      figsize=(2.3 * len(layers) + 0.8, 2.4 * len(models)),
      squeeze=False,
  )
  image = None
  for r, model in enumerate(models):
    for c, layer in enumerate(layers):
      gram = np.asarray(grams[model][layer], np.float64)
      scale = float(np.mean(np.diag(gram))) or 1.0
      image = axes[r, c].imshow(
          gram / scale, cmap='RdBu_r', vmin=-1, vmax=1, interpolation='nearest'
      )
      axes[r, c].set_xticks([])
      axes[r, c].set_yticks([])
      if r == 0:
        axes[r, c].set_title(f'{layer} ({gram.shape[0]})', fontsize=8)
    axes[r, 0].set_ylabel(model, fontsize=9)
  fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8)
  if title:
    fig.suptitle(title, fontsize=10)
  return _save(fig, path)


def curves_figure(
    curves: Mapping[str, np.ndarray],
    path: str | os.PathLike[str],
    *,
    title: str = '',
    xlabel: str = 'fraction of pixels deleted',
    ylabel: str = 'probability of the label',
) -> str:
  """Line plot of ``{label: [T + 1]}`` curves over ``[0, 1]``."""
  fig, ax = plt.subplots(figsize=(5.5, 3.6))
  for label, curve in curves.items():
    curve = np.asarray(curve)
    ax.plot(
        np.linspace(0, 1, len(curve)),
        curve,
        label=label,
        linestyle='-' if 'bort' in label else '--',
    )
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_ylim(0, 1.02)
  ax.legend(fontsize=7)
  if title:
    ax.set_title(title, fontsize=10)
  return _save(fig, path)


_MARKERS = ('o', 's', '^', 'D', 'v', 'P')
_DASHES = ('-', '--', ':', '-.')


def interval_lines_figure(
    panels: Mapping[str, Mapping[str, Sequence[Mapping[str, float | None]]]],
    path: str | os.PathLike[str],
    *,
    ylabel: str,
    xlabel: str = '',
    title: str = '',
    numeric_x: bool = False,
    markers_only: bool = False,
) -> str:
  """One panel per key: series of means with 95% intervals as error bars.

  Args:
    panels: ``{panel title: {series label: [{'mean', 'ci95'}, ...],
      '_layers': x values or labels}}`` (entries with a ``None`` mean are
      left out).
    path: PNG file to write.
    ylabel, xlabel: axis labels.
    title: figure title, above the legend.
    numeric_x: plot ``_layers`` as numbers (else as category labels).
    markers_only: no lines between points (categories that are not a
      sequence).

  The panels share the y axis. Each series has its own hollow marker and
  line style, and on category axes the series are offset sideways, so that
  series with equal values stay visible.

  Returns:
    ``path``.
  """
  names = list(panels)
  fig, axes = plt.subplots(
      1,
      len(names),
      figsize=(4.2 * len(names), 3.6),
      squeeze=False,
      sharey=True,
  )
  handles, labels = [], []
  for ax, name in zip(axes[0], names):
    panel = panels[name]
    xs = list(panel['_layers'])
    series = [k for k in panel if k != '_layers']
    for j, label in enumerate(series):
      points = [
          (i, e['mean'], e.get('ci95') or 0.0)
          for i, e in enumerate(panel[label])
          if e is not None and e.get('mean') is not None
      ]
      if not points:
        continue
      index, mean, half = map(np.asarray, zip(*points))
      # Series that coincide (e.g. two inverses both exact) stay visible:
      # each has its own hollow marker and dash pattern, and categories are
      # offset sideways.
      if numeric_x:
        x = np.asarray(xs, float)[index.astype(int)]
      else:
        x = index + (j - (len(series) - 1) / 2) * 0.08
      handle = ax.errorbar(
          x,
          mean,
          yerr=half,
          marker=_MARKERS[j % len(_MARKERS)],
          markersize=6,
          markerfacecolor='none',
          capsize=2,
          linestyle='none' if markers_only else _DASHES[j % len(_DASHES)],
          label=label,
      )
      if label not in labels:
        handles.append(handle)
        labels.append(label)
    if not numeric_x:
      ax.set_xticks(range(len(xs)))
      ax.set_xticklabels(xs, rotation=30, ha='right', fontsize=7)
    ax.set_title(name, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.grid(alpha=0.3)
  axes[0, 0].set_ylabel(ylabel, fontsize=8)
  fig.legend(
      handles,
      labels,
      loc='upper center',
      ncol=min(4, len(labels)),
      fontsize=8,
      bbox_to_anchor=(0.5, 0.99),
      frameon=False,
  )
  if title:
    fig.suptitle(title, fontsize=10, y=1.07)
  fig.tight_layout(rect=(0, 0, 1, 0.9))
  return _save(fig, path)
