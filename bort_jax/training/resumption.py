"""Where a run starts: a restored checkpoint, checked, or nothing.

:func:`restore` gives the newest verified checkpoint of a work directory
(refusing one with non-finite parameters); :func:`train_batches` goes on
with the input where it stopped; :func:`drop_records_after` cuts
``metrics.jsonl`` back to the step resumed from, so the resumed run writes
the later records again, once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from bort_jax.training import checkpoint, input_pipeline, metrics_io, numerics
from bort_jax.training.errors import CheckpointError
from bort_jax.training.reporting import MetricsWindow

logger = logging.getLogger('bort_jax')


def restore(
    manager: Any,
    abstract_state: Any,
    shardings: Any,
    *,
    allow_unverified: bool,
) -> checkpoint.Restored | None:
  """The newest verified checkpoint of ``manager``, placed with ``shardings``.

  Args:
    manager: the run's orbax checkpoint manager.
    abstract_state: the train state's shapes (``jax.eval_shape``).
    shardings: where one replica of the state lives.
    allow_unverified: accept a checkpoint with no record to verify it by.

  Returns:
    The restored state, step, metrics window and input iterator state, or
    ``None`` if there is no checkpoint.

  Raises:
    CheckpointError: no checkpoint restores and verifies, or the newest
      holds non-finite parameters.
  """
  restored = checkpoint.restore_verified(
      manager,
      jax.tree.map(
          lambda x, sharding: jax.ShapeDtypeStruct(
              x.shape, x.dtype, sharding=sharding
          ),
          abstract_state,
          shardings,
      ),
      loop_template=MetricsWindow.EMPTY,
      data=True,
      allow_unverified=allow_unverified,
  )
  if restored is None:
    return None
  if not bool(jax.device_get(numerics.all_finite(restored.state.params))):
    raise CheckpointError(
        f'checkpoint {restored.step} in {manager.directory} holds '
        'non-finite parameters; it cannot be resumed from'
    )
  if restored.loop is None:
    logger.warning(
        'checkpoint %d has no %r item (saved by an older version): the '
        'first record after it averages only the steps after it',
        restored.step,
        checkpoint.LOOP_ITEM,
    )
  return restored


def train_batches(
    config: ml_collections.ConfigDict,
    source: Any,
    *,
    step: int,
    saved: Any,
    directory: Any,
) -> input_pipeline.TrainBatches:
  """The training batches from global step ``step``: positioned by the
  checkpoint's saved iterator state ``saved`` where it fits, else rebuilt
  at ``step`` (:meth:`~bort_jax.training.input_pipeline.TrainBatches.resume`).

  Raises:
    CheckpointError: the saved iterator is at another step than the train
      state of checkpoint ``step`` in ``directory``.
  """
  try:
    return input_pipeline.TrainBatches.resume(
        config, source, step=step, saved=saved
    )
  except ValueError as error:
    raise CheckpointError(
        f'checkpoint {step} in {directory}: {error}'
    ) from None


def drop_records_after(workdir: Path, step: int) -> None:
  """Cuts ``WORKDIR/metrics.jsonl`` back to ``step`` (process 0 only)."""
  if jax.process_index() != 0:
    return
  path = workdir / metrics_io.METRICS_FILE
  dropped = metrics_io.truncate_after(path, step)
  if dropped:
    logger.warning(
        '%s: dropped %d record(s) after step %d, the checkpoint resumed from',
        path,
        dropped,
        step,
    )


def host_step(state) -> int:
  """The global step of ``state`` (pmap: of its first copy)."""
  return int(np.asarray(jax.device_get(state.step)).reshape(-1)[0])


__all__ = ['drop_records_after', 'host_step', 'restore', 'train_batches']
