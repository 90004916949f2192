"""Measures every run of one architecture and builds its report entry.

Each run is measured on its own (:func:`measure.measure_model`); then the
adversarial samples of every run are classified by an independently
trained model (the transfer test), and the seeds are aggregated and
compared (:func:`aggregation.aggregate`, :func:`report.comparisons`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np

from bort_jax.programs.explain import aggregation, experiment, finished, measure
from bort_jax.programs.explain import report

__all__ = [
    'MeasurementData',
    'RestoredRun',
    'analyse_architecture',
    'recorded_training',
    'settings',
]


class MeasurementData(NamedTuple):
  """The test set, normalised, and what the measurements compare it with.

  Attributes:
    images: ``[N, H, W, C]`` normalised test images.
    labels: ``[N]`` their labels.
    means: ``[K, H, W, C]`` class-mean training images, pixel units.
    norm: the data normalisation.
  """

  images: jax.Array
  labels: jax.Array
  means: np.ndarray
  norm: experiment.Normalization


class RestoredRun(NamedTuple):
  """A finished run read back: its directory, model, config and final record."""

  workdir: str | os.PathLike[str]
  model: Any
  config: Mapping[str, Any]
  record: Mapping[str, Any]


def analyse_architecture(
    arch: str,
    runs: Mapping[int, Mapping[str, RestoredRun]],
    untrained: Mapping[int, Any],
    data: MeasurementData,
    config: measure.MeasureConfig,
    *,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], dict[str, Any]]:
  """Measures every run of one architecture.

  Args:
    arch: the architecture's name (for the log).
    runs: ``{seed: {role: run}}``.
    untrained: ``{seed: the architecture at that seed's initialisation}``,
      the sanity check's reference.
    data: the test set.
    config: what to measure and on how many examples.
    log: progress messages.

  Returns:
    ``(entry, arrays)``: the report entry (``runs``, ``per_seed``,
    ``summary``, ``comparisons``) and the first seed's arrays for the
    figures.
  """
  seeds = sorted(runs)
  per_seed, arrays, attacks = {}, {}, {}
  for seed in seeds:
    per_seed[seed] = {}
    for role, run in runs[seed].items():
      log(f'{arch} seed {seed} {role}: measuring')
      results, seed_arrays = measure.measure_model(
          run.model,
          untrained[seed],
          data.images,
          data.labels,
          data.means,
          data.norm,
          config,
          log=log,
      )
      results['test_accuracy'] = run.record.get('eval_accuracy')
      per_seed[seed][role] = results
      attacks[(seed, role)] = seed_arrays.pop('adversarial')
      if seed == seeds[0]:
        arrays[role] = seed_arrays
  _add_transfer(runs, per_seed, attacks)
  summary = {
      role: aggregation.aggregate([per_seed[s][role] for s in seeds])
      for role in ('baseline', 'bort')
  }
  inputs = data.images[: config.num_figure_examples]
  arrays['inputs'] = np.asarray(data.norm.to_pixels(inputs))
  entry = {
      'runs': {
          seed: {role: _run_info(run) for role, run in runs[seed].items()}
          for seed in seeds
      },
      'per_seed': per_seed,
      'summary': summary,
      'comparisons': report.comparisons(per_seed),
  }
  return entry, arrays


def _run_info(run: RestoredRun) -> dict[str, Any]:
  """What the report says of a run: its settings and recorded results."""
  return {
      'workdir': run.workdir,
      'optimizer': run.config['optimizer'],
      'gamma': run.config['gamma'],
      'epochs': run.config['epochs'],
      'train_examples': run.config['train_examples'],
      'batch_size': run.config['batch_size'],
      'bort_exclude': run.config.get('bort_exclude'),
      'train_seconds': run.record.get('elapsed'),
      'eval_count': run.record.get('eval_count'),
      'orthogonality': run.record.get('orthogonality'),
  }


def _add_transfer(
    runs: Mapping[int, Mapping[str, RestoredRun]],
    per_seed: dict[int, dict[str, Any]],
    attacks: Mapping[tuple[int, str], Mapping[str, jax.Array]],
) -> None:
  """Adds the transfer success of every run's adversarial samples.

  The samples made on one model are classified by an independently trained
  one: the next seed's model of the same optimizer; with one seed, the
  other optimizer's model.
  """
  seeds = sorted(runs)
  for seed in seeds:
    for role in runs[seed]:
      if len(seeds) > 1:
        other = (seeds[(seeds.index(seed) + 1) % len(seeds)], role)
      else:
        other = (seed, 'bort' if role == 'baseline' else 'baseline')
      sample = attacks[(seed, role)]
      per_seed[seed][role]['adversarial']['transfer'] = {
          'to': f'seed {other[0]} {other[1]}',
          'success_rate': measure.transfer_success(
              runs[other[0]][other[1]].model,
              sample['images'],
              sample['targets'],
          ),
      }


def recorded_training(runs: dict[str, Any]) -> dict[str, Any]:
  """The training time that the runs recorded, per architecture and total."""
  recorded = {}
  for arch, by_seed in runs.items():
    recorded[arch] = sum(
        finished.final_evaluation(d).get('elapsed', 0.0)
        for pair in by_seed.values()
        for d in pair.values()
    )
  return {
      'training_recorded_by_runs': recorded,
      'training_recorded_total': sum(recorded.values()),
  }


def settings(
    runs: dict[str, Any],
    config: measure.MeasureConfig,
    norm: experiment.Normalization,
) -> dict[str, Any]:
  """The report's settings: models, seeds, analysis, normalisation, backend."""
  seeds = sorted({s for by_seed in runs.values() for s in by_seed})
  return {
      'models': list(runs),
      'seeds': seeds,
      'work_dirs': "see each architecture's `runs`",
      'analysis': {k: v for k, v in vars(config).items()},
      'normalization': {'mean': list(norm.mean), 'std': list(norm.std)},
      'jax_backend': jax.default_backend(),
  }
