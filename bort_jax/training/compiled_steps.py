"""The run's compiled device functions: train, evaluate, report, initialise.

:func:`compile_steps` compiles the pure steps of
:mod:`bort_jax.training.step` for ``config.parallel`` (``jit`` over a device
mesh, or ``pmap``) into a :class:`CompiledSteps`; :func:`evaluate` runs the
eval step over a split and :func:`initialize_state` builds a train state as
one program.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import bort_jax
from bort_jax.training import modeling, parallel
from bort_jax.training import step as train_step_lib


@dataclasses.dataclass(frozen=True)
class CompiledSteps:
  """The run's device functions and how batches and states are placed.

  Attributes:
    train_step: ``(state, batch) -> (state, metrics)``.
    eval_step: ``(state, batch) -> sums``.
    report: ``state -> orthogonality summary``.
    put_batch: host batch (this process' rows) -> device batch.
    state_shardings: where one replica of the state lives (the shardings
      the state is initialised and restored with).
    replicate_state: one replica -> what the steps take (pmap: a copy per
      device; jit: unchanged).
    get_state: the inverse of ``replicate_state``.
    sync_every_step: wait for each step (XLA CPU collectives deadlock when
      many multi-device steps are in flight).
  """

  train_step: Callable
  eval_step: Callable
  report: Callable
  put_batch: Callable
  state_shardings: Any
  replicate_state: Callable
  get_state: Callable
  sync_every_step: bool


def orthogonality_summary(
    params, amplitude, exclude: tuple[str, ...] = ()
) -> dict[str, jax.Array]:
  """:func:`bort_jax.summarize_report` of the kernels Bort constrains.

  ``exclude`` are the config's ``bort_exclude`` patterns
  (:func:`~bort_jax.training.modeling.bort_exclude_patterns`): the kernels
  the optimizer leaves out of the Bort term are left out of the report too.
  """
  mask = bort_jax.kernels_except(*exclude) if exclude else None
  return bort_jax.summarize_report(
      bort_jax.orthogonality_report(params, amplitude=amplitude, mask=mask)
  )


def compile_steps(
    config: ml_collections.ConfigDict,
    definition: train_step_lib.ModelDefinition,
    tx,
    template: train_step_lib.TrainState,
) -> CompiledSteps:
  """Compiles the steps for ``config.parallel`` (``jit`` over a mesh, or ``pmap``).

  Args:
    config: uses ``parallel``, ``param_sharding``, ``fsdp_min_size``,
      ``label_smoothing``, ``amplitude`` and ``bort_exclude``.
    definition: from :func:`bort_jax.training.step.create_train_state`.
    tx: the optimizer.
    template: the train state or its shapes (``jax.eval_shape``), for the
      shardings.
  """
  exclude = modeling.bort_exclude_patterns(config)
  report = lambda state: orthogonality_summary(
      state.params, config.amplitude, exclude
  )
  if config.parallel == 'pmap':
    return _pmap_steps(config, definition, tx, template, report)
  return _jit_steps(config, definition, tx, template, report)


def _multi_device_cpu() -> bool:
  return jax.default_backend() == 'cpu' and jax.device_count() > 1


def _pmap_steps(config, definition, tx, template, report) -> CompiledSteps:
  """:func:`compile_steps` for ``parallel='pmap'``: a state copy per device."""
  if jax.process_count() > 1:
    raise ValueError(
        'parallel=pmap runs on one process; use parallel=jit across hosts'
    )
  train = train_step_lib.make_train_step(
      definition,
      tx,
      label_smoothing=config.label_smoothing,
      axis_name=parallel.PMAP_AXIS,
  )
  evaluate_step = train_step_lib.make_eval_step(
      definition, axis_name=parallel.PMAP_AXIS
  )
  return CompiledSteps(
      train_step=jax.pmap(
          train, axis_name=parallel.PMAP_AXIS, donate_argnums=0
      ),
      eval_step=jax.pmap(evaluate_step, axis_name=parallel.PMAP_AXIS),
      report=jax.jit(lambda state: report(parallel.unreplicate(state))),
      put_batch=parallel.split_for_pmap,
      state_shardings=jax.tree.map(
          lambda _: jax.sharding.SingleDeviceSharding(jax.local_devices()[0]),
          template,
      ),
      replicate_state=parallel.replicate,
      get_state=parallel.unreplicate,
      sync_every_step=_multi_device_cpu(),
  )


def _jit_steps(config, definition, tx, template, report) -> CompiledSteps:
  """:func:`compile_steps` for ``parallel='jit'``: one state over a mesh."""
  mesh = parallel.create_mesh()
  state_shardings = parallel.state_sharding(
      template,
      mesh,
      fsdp=config.param_sharding == 'fsdp',
      min_size=config.fsdp_min_size,
  )
  batch_sharding = parallel.batch_sharding(mesh)
  replicated = parallel.replicated(mesh)
  train = train_step_lib.make_train_step(
      definition, tx, label_smoothing=config.label_smoothing
  )
  return CompiledSteps(
      train_step=jax.jit(
          train,
          in_shardings=(state_shardings, batch_sharding),
          out_shardings=(state_shardings, replicated),
          donate_argnums=0,
      ),
      eval_step=jax.jit(
          train_step_lib.make_eval_step(definition),
          in_shardings=(state_shardings, batch_sharding),
          out_shardings=replicated,
      ),
      report=jax.jit(
          report, in_shardings=(state_shardings,), out_shardings=replicated
      ),
      put_batch=lambda batch: parallel.global_batch(batch, mesh),
      state_shardings=state_shardings,
      replicate_state=lambda state: state,
      get_state=lambda state: state,
      sync_every_step=_multi_device_cpu(),
  )


# XLA:CPU spends super-linear time optimising a program holding many threefry
# computations (20 s for a 5-layer CNN's initialisers); unoptimised it compiles
# in about a second, and the program runs once.
CPU_INIT_COMPILER_OPTIONS = {'xla_backend_optimization_level': 0}


def initialize_state(
    initialize: Callable[[], Any], shardings: Any = None
) -> Any:
  """Runs ``initialize`` (e.g. model construction and ``tx.init``) as one program.

  One compiled program instead of one per initializer, with the result placed
  directly with ``shardings`` (so a sharded state is never whole on one
  device).

  Args:
    initialize: a function of no arguments returning a pytree of arrays.
    shardings: output shardings (a pytree prefix), or ``None``.

  Returns:
    ``initialize()``'s arrays.
  """
  lowered = jax.jit(initialize, out_shardings=shardings).lower()
  options = (
      CPU_INIT_COMPILER_OPTIONS if jax.default_backend() == 'cpu' else None
  )
  return lowered.compile(compiler_options=options)()


def evaluate(steps: CompiledSteps, state, batches) -> dict[str, float]:
  """Loss and accuracy over every eval example (padding masked out).

  Returns:
    ``{'eval_loss', 'eval_accuracy', 'eval_count'}``.
  """
  totals = None
  for batch in batches:
    sums = steps.eval_step(state, steps.put_batch(batch))
    if steps.sync_every_step:
      jax.block_until_ready(sums)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.tree.map(
      lambda x: float(np.asarray(x).reshape(-1)[0]), jax.device_get(totals)
  )
  count = max(totals['count'], 1.0)
  return {
      'eval_loss': totals['loss_sum'] / count,
      'eval_accuracy': totals['correct'] / count,
      'eval_count': int(totals['count']),
  }


def host_scalars(tree) -> dict[str, float]:
  """Device scalars (or pmapped [devices] copies) -> floats."""
  return {
      k: float(np.asarray(v).reshape(-1)[0])
      for k, v in jax.device_get(tree).items()
  }


__all__ = [
    'CPU_INIT_COMPILER_OPTIONS',
    'CompiledSteps',
    'compile_steps',
    'evaluate',
    'host_scalars',
    'initialize_state',
    'orthogonality_summary',
]
