"""The multi-seed evaluation protocol of ``bort-explain``: which runs, where.

The protocol compares, for each architecture, a baseline (``adamw``, gamma
0) with Bort (``bort_adamw``) over several seeds. Every run is a packaged
recipe with the AdamW-family settings of ``mnist_cnn`` (learning rate 2e-3,
weight decay 1e-4) and one Bort gamma for every architecture, that of the
Bort-invertible preset ``mnist_invertible_cnn`` (30), so that between the
CNN rows only the architecture differs; each recipe keeps its epochs and
batch size (or those given). Accuracy is measured on the full test set. Runs live in
``WORKDIR/<config>/seed<k>/<optimizer>``; a finished run whose
``config.json`` equals the protocol's config is read back, not retrained
(:mod:`~bort_jax.programs.explain.finished`). The seeds are aggregated by
:mod:`~bort_jax.programs.explain.aggregation`; both modules' functions are
also names of this one.

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

import ml_collections

from bort_jax import configs
from bort_jax.programs.explain.aggregation import (
    aggregate,
    check_finite,
    confidence,
    find_nan,
    paired_difference,
    paired_ratio,
)
from bort_jax.programs.explain.finished import (
    BOOKKEEPING_FIELDS,
    final_evaluation,
    is_finished,
)
from bort_jax.training import checkpoint
from bort_jax.training import loop

__all__ = [
    'ARCHITECTURE_CONFIGS',
    'BOOKKEEPING_FIELDS',
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
