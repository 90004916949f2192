"""Plots of numbers: Gram matrices, curves, means with 95% intervals."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from bort_jax.programs.explain.figures.common import plt, save

__all__ = ['curves_figure', 'gram_figure', 'interval_lines_figure']


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
  return save(fig, path)


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
  return save(fig, path)


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
  handles: dict[str, object] = {}
  for ax, name in zip(axes[0], names):
    for label, handle in _draw_panel(
        ax, panels[name], numeric_x=numeric_x, markers_only=markers_only
    ):
      handles.setdefault(label, handle)
    ax.set_title(name, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.grid(alpha=0.3)
  axes[0, 0].set_ylabel(ylabel, fontsize=8)
  fig.legend(
      list(handles.values()),
      list(handles),
      loc='upper center',
      ncol=min(4, len(handles)),
      fontsize=8,
      bbox_to_anchor=(0.5, 0.99),
      frameon=False,
  )
  if title:
    fig.suptitle(title, fontsize=10, y=1.07)
  fig.tight_layout(rect=(0, 0, 1, 0.9))
  return save(fig, path)


def _draw_panel(
    ax,
    panel: Mapping[str, Sequence[Mapping[str, float | None]]],
    *,
    numeric_x: bool,
    markers_only: bool,
) -> list[tuple[str, object]]:
  """Draws one panel's series; returns ``(label, legend handle)`` of each."""
  xs = list(panel['_layers'])
  series = [k for k in panel if k != '_layers']
  drawn = []
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
    drawn.append((label, handle))
  if not numeric_x:
    ax.set_xticks(range(len(xs)))
    ax.set_xticklabels(xs, rotation=30, ha='right', fontsize=7)
  return drawn
