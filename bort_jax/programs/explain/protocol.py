"""The multi-seed evaluation protocol of ``bort-explain``: which runs, where.

The protocol compares, for each architecture, a baseline (``adamw``, gamma
0) with Bort (``bort_adamw``) over several seeds. Every run is a packaged
recipe with the AdamW-family settings of ``mnist_cnn`` (learning rate 2e-3,
weight decay 1e-4) and one Bort gamma for every architecture, that of the
Bort-invertible preset ``mnist_invertible_cnn`` (30), so that between the
CNN rows only the architecture differs; each recipe keeps its epochs and
batch size (or those given). Accuracy is measured on the full test set. Runs live in
``WORKDIR/<config>/seed<k>/<optimizer>``; a finished run whose
``config.json`` equals the protocol's config is read back, not retrained.

Example:
  >>> runs = protocol_configs(['bort_invertible_cnn'], [0, 1])
  >>> sorted(runs['bort_invertible_cnn'][1])
  ['baseline', 'bort']
  >>> run_directory('runs', runs['bort_invertible_cnn'][1]['bort'])
  PosixPath('runs/mnist_invertible_cnn/seed1/bort_adamw')
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from bort_jax import configs
from bort_jax import explain
from bort_jax.training import checkpoint
from bort_jax.training import loop

__all__ = [
    'ARCHITECTURE_CONFIGS',
    'GAMMA_RECIPE',
    'PAIR',
    'aggregate',
    'check_finite',
    'confidence',
    'final_evaluation',
    'find_nan',
    'is_finished',
    'paired_difference',
    'paired_ratio',
    'protocol_configs',
    'run_directory',
    'train_runs',
]

#: Architecture (model registry name) -> the packaged recipe trained for it.
ARCHITECTURE_CONFIGS: dict[str, str] = {
    'bort_invertible_cnn': 'mnist_invertible_cnn',
    'invertible_cnn': 'mnist_cnn',
    'mlp': 'mnist_mlp',
}

#: The recipe whose Bort gamma every architecture's ``bort`` run uses.
GAMMA_RECIPE = 'mnist_invertible_cnn'

#: Roles and optimizers of each compared pair.
PAIR: tuple[tuple[str, str], ...] = (
    ('baseline', 'adamw'),
    ('bort', 'bort_adamw'),
)


def protocol_configs(
    architectures: Sequence[str],
    seeds: Sequence[int],
    *,
    learning_rate: float = 2e-3,
    weight_decay: float = 1e-4,
    gamma: float | None = None,
    epochs: Mapping[str, int] | None = None,
    train_examples: Mapping[str, int] | None = None,
) -> dict[str, dict[int, dict[str, ml_collections.ConfigDict]]]:
  """The configs of the protocol: ``{architecture: {seed: {role: config}}}``.

  Args:
    architectures: keys of :data:`ARCHITECTURE_CONFIGS`.
    seeds: the seeds (initialisation and data order) of the repeats.
    learning_rate: peak AdamW learning rate of every run.
    weight_decay: AdamW weight decay of every run.
    gamma: the Bort coefficient of every ``bort`` run (the baseline has 0);
      default: that of :data:`GAMMA_RECIPE`.
    epochs: per-architecture epochs (default: each recipe's).
    train_examples: per-architecture number of training examples, the
      first N of the training set (default, or 0: all 60000).

  Returns:
    Validated configs; accuracy is measured on the whole test set.

  Raises:
    ValueError: an unknown architecture or no seeds.
  """
  unknown = [a for a in architectures if a not in ARCHITECTURE_CONFIGS]
  if unknown:
    raise ValueError(
        f'unknown architecture(s) {unknown}; valid: '
        f'{list(ARCHITECTURE_CONFIGS)}'
    )
  if not seeds:
    raise ValueError('give at least one seed')
  if gamma is None:
    gamma = configs.get_config(GAMMA_RECIPE).gamma
  if not (math.isfinite(gamma) and gamma > 0):
    raise ValueError(f'gamma must be finite and positive, got {gamma}')
  epochs = dict(epochs or {})
  train_examples = dict(train_examples or {})
  out = {}
  for arch in architectures:
    recipe = configs.get_config(ARCHITECTURE_CONFIGS[arch])
    out[arch] = {}
    for seed in seeds:
      out[arch][int(seed)] = {}
      for role, optimizer in PAIR:
        config = configs.replace(
            recipe,
            optimizer=optimizer,
            gamma=gamma if optimizer.startswith('bort') else 0.0,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            epochs=epochs.get(arch, recipe.epochs),
            train_examples=train_examples.get(arch, 0),
            eval_examples=0,
            seed=int(seed),
        )
        out[arch][int(seed)][role] = configs.validate(config)
  return out


def run_directory(
    workdir: str | os.PathLike[str], config: ml_collections.ConfigDict
) -> Path:
  """Where the protocol keeps the run of ``config`` under ``workdir``."""
  return Path(workdir) / config.name / f'seed{config.seed}' / config.optimizer


#: Config fields that do not change the trained model (logging and
#: checkpoint cadence): a finished run is reused whatever their values.
BOOKKEEPING_FIELDS = (
    'log_every_steps',
    'checkpoint_every_steps',
    'keep_checkpoints',
)


def _checkpoint_steps(run_dir: Path) -> list[int]:
  folder = run_dir / checkpoint.CHECKPOINT_DIR
  if not folder.is_dir():
    return []
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def final_evaluation(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
  """The final evaluation record of a finished ``bort-train`` run.

  A run is finished when its newest checkpoint holds the step of the
  evaluation of its config's last epoch (the loop saves that checkpoint
  after writing the record) and that evaluation is finite.

  Args:
    run_dir: the run's work directory.

  Returns:
    The record (``step``, ``eval_accuracy``, ``eval_count``...).

  Raises:
    FileNotFoundError: no ``config.json``.
    ValueError: the run is not finished, its newest checkpoint is not that
      of its final evaluation, or the evaluation is not finite; the
      message says which.
  """
  run_dir = Path(run_dir)
  epochs = checkpoint.load_config(run_dir).epochs
  record = next(
      (
          r
          for r in reversed(loop.read_metrics(run_dir))
          if 'eval_accuracy' in r and r.get('epoch') == epochs
      ),
      None,
  )
  resume = f'; finish it with bort-train --workdir {run_dir} --resume'
  if record is None:
    raise ValueError(
        f'{run_dir} is not a finished run: no evaluation of its last epoch '
        f'({epochs}) in {run_dir / loop.METRICS_FILE}{resume}'
    )
  if record.get('nonfinite'):
    raise ValueError(
        f'{run_dir} diverged: its final evaluation has non-finite '
        f'{", ".join(record["nonfinite"])}'
    )
  steps = _checkpoint_steps(run_dir)
  if record['step'] not in steps or steps[-1] != record['step']:
    raise ValueError(
        f'{run_dir} is not a finished run: its final evaluation is at step '
        f'{record["step"]} but its checkpoints are at steps {steps}{resume}'
    )
  return record


def is_finished(
    run_dir: str | os.PathLike[str], config: ml_collections.ConfigDict
) -> bool:
  """Whether ``run_dir`` holds a finished run of ``config``.

  The run's ``config.json`` must equal ``config`` up to
  :data:`BOOKKEEPING_FIELDS`, and :func:`final_evaluation` find its final
  evaluation and the checkpoint saved with it.
  """
  run_dir = Path(run_dir)
  if not (run_dir / checkpoint.CONFIG_FILE).is_file():
    return False
  try:
    final_evaluation(run_dir)
  except ValueError:
    return False
  saved = configs.to_dict(checkpoint.load_config(run_dir))
  wanted = configs.to_dict(config)
  for field in BOOKKEEPING_FIELDS:
    saved.pop(field, None)
    wanted.pop(field, None)
  return saved == wanted


def train_runs(
    runs: dict[str, dict[int, dict[str, ml_collections.ConfigDict]]],
    workdir: str | os.PathLike[str],
    *,
    data_dir: str | None = None,
    log=print,
) -> dict[str, dict[int, dict[str, str]]]:
  """Trains (or reads back) every run of :func:`protocol_configs`.

  Returns:
    ``{architecture: {seed: {role: run directory}}}``.
  """
  from bort_jax.training import (
      checkpoint,  # pylint: disable=g-import-not-at-top
      loop,  # pylint: disable=g-import-not-at-top
  )

  out = {}
  for arch, by_seed in runs.items():
    out[arch] = {}
    for seed, pair in by_seed.items():
      out[arch][seed] = {}
      for role, config in pair.items():
        run_dir = run_directory(workdir, config)
        if is_finished(run_dir, config):
          log(f'{arch} seed {seed} {role}: reading the finished run {run_dir}')
        else:
          log(
              f'training {arch} seed {seed} with {config.optimizer} for '
              f'{config.epochs} epochs in {run_dir}'
          )
          loop.train_and_evaluate(
              config,
              run_dir,
              data_dir=data_dir,
              resume=(run_dir / checkpoint.CHECKPOINT_DIR).exists(),
              progress=False,
              description=f'{arch} seed {seed} {role}',
          )
        out[arch][seed][role] = os.fspath(run_dir)
  return out


def confidence(values: Sequence[float | None]) -> dict[str, Any]:
  """Mean and 95% Student-t half-width over seeds, with the values.

  ``ci95`` is ``None`` for a single value (one seed gives no interval);
  ``mean`` is ``None`` when a value is missing (e.g. a success level not
  reached), so no average hides it.

  Example:
    >>> round(confidence([1.0, 2.0, 3.0])['ci95'], 4)
    2.4841
  """
  values = list(values)
  if any(v is None for v in values):
    return {'mean': None, 'ci95': None, 'n': len(values), 'values': values}
  mean, half = explain.mean_confidence_interval(np.asarray(values, float))
  return {
      'mean': float(mean),
      'ci95': None if len(values) < 2 else round(float(half), 6),
      'n': len(values),
      'values': [float(v) for v in values],
  }


def aggregate(per_seed: Sequence[Any]) -> Any:
  """Replaces every number of equally structured results by :func:`confidence`.

  Args:
    per_seed: one result tree (nested dicts of numbers, strings, lists) per
      seed, all with the same keys.

  Returns:
    The tree of the first seed with each number (or ``None``) replaced by
    ``{'mean', 'ci95', 'n', 'values'}``; strings and lists are kept from
    the first seed, and a value that is ``None`` in every seed stays
    ``None``.

  Example:
    >>> trees = [{'r': 0.5, 'layer': 'a'}, {'r': 0.7, 'layer': 'a'}]
    >>> aggregate(trees)['r']['mean']
    0.6
  """
  first = per_seed[0]
  if isinstance(first, Mapping):
    return {k: aggregate([tree[k] for tree in per_seed]) for k in first}
  if all(v is None for v in per_seed):
    return None
  if first is None or (
      isinstance(first, (int, float, np.number)) and not isinstance(first, bool)
  ):
    if all(
        v is None or isinstance(v, (int, float, np.number)) for v in per_seed
    ):
      return confidence(per_seed)
  return first


def paired_difference(
    bort: Sequence[float], baseline: Sequence[float]
) -> dict[str, Any]:
  """Bort minus baseline per seed (same seed = same initialisation and data
  order), with its mean and 95% interval."""
  return confidence([b - a for b, a in zip(bort, baseline, strict=True)])


def paired_ratio(
    bort: Sequence[float], baseline: Sequence[float]
) -> dict[str, Any]:
  """Bort / baseline per seed, with its mean and 95% interval."""
  return confidence([b / a for b, a in zip(bort, baseline, strict=True)])


def find_nan(tree: Any, path: str = '') -> list[str]:
  """Paths of the NaN numbers in a report tree (``None`` is allowed).

  Example:
    >>> find_nan({'a': [1.0, float('nan')], 'b': {'c': None}})
    ['a/1']
  """
  if isinstance(tree, Mapping):
    return [p for k, v in tree.items() for p in find_nan(v, f'{path}/{k}')]
  if isinstance(tree, (list, tuple)):
    return [p for i, v in enumerate(tree) for p in find_nan(v, f'{path}/{i}')]
  if isinstance(tree, (float, np.floating)) and math.isnan(tree):
    return [path.lstrip('/')]
  return []


def check_finite(report: Mapping[str, Any]) -> None:
  """Raises if any number of the report is NaN.

  Raises:
    ValueError: naming the first NaN entries; nothing is written then.
  """
  bad = find_nan(report)
  if bad:
    raise ValueError(
        f'{len(bad)} reported metric(s) are NaN, e.g. '
        f'{bad[:5]}; refusing to write a report with NaN'
    )
