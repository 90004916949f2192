"""Finished ``bort-train`` runs: which runs can be read back, not retrained.

A run is finished when its newest checkpoint holds the step of the final
evaluation (that of its config's last epoch) and that evaluation is
finite; the protocol reuses it when its ``config.json`` equals the
protocol's config up to :data:`BOOKKEEPING_FIELDS`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ml_collections

from bort_jax import configs
from bort_jax.training import checkpoint
from bort_jax.training import loop

__all__ = ['BOOKKEEPING_FIELDS', 'final_evaluation', 'is_finished']


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
