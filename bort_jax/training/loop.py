"""The training loop: train, evaluate each epoch, log, checkpoint, resume.

:func:`train_and_evaluate` runs a config (:mod:`bort_jax.configs`) in a work
directory::

  WORKDIR/config.json     the config
  WORKDIR/checkpoints/    orbax checkpoints (each epoch end, after its
                          evaluation record; every checkpoint_every_steps;
                          on stopping)
  WORKDIR/metrics.jsonl   one JSON object per line, e.g. at an epoch's end:
    {"step": 468, "epoch": 1, "train_loss": 0.21, "train_accuracy": 0.94,
     "eval_loss": 0.07, "eval_accuracy": 0.978, "eval_count": 10000,
     "learning_rate": 0.0005, "step_time": 0.051, "elapsed": 31.2,
     "orthogonality": {"relative_error/mean": ..., "relative_error/max": ...,
                       "mean_abs_cosine/mean": ..., ..., "norm_spread/max": ...}}
    ``train_*`` average the steps since the previous record; with
    ``log_every_steps`` there are also records within epochs (fractional
    ``epoch``, training fields only). ``step_time`` excludes compilation
    and evaluation; ``elapsed`` counts seconds since the call started.

    Values that are not finite numbers are written as ``null`` and named
    in ``"nonfinite"`` (strict JSON); with ``skip_nonfinite_steps``,
    ``nonfinite_steps`` counts the skipped steps of a record.
  WORKDIR/.lock           held by the process that owns the directory

A run is a function of its config: the batches depend only on
``(seed, epoch, step)`` and every random number lives in the train state, so
a run stopped (``max_steps``, SIGINT/SIGTERM, ``kill -9``) and resumed ends
with the same parameters, bit for bit on CPU, as one that was never
stopped; ``metrics.jsonl`` is cut back to the checkpoint resumed from and
the running sums of the current record are restored with it (they are part
of the checkpoint), so the records match too (timings aside). An epoch-end
checkpoint always follows that epoch's evaluation record, so no resume
skips an evaluation.

This is the one training loop of the package: ``bort-train`` and
``bort-explain`` both train through it.

Example:
  >>> from bort_jax import configs
  >>> config = configs.get_config('mnist_mlp')
  >>> result = train_and_evaluate(config, '/tmp/mnist_mlp',
  ...                             data_dir='/tmp/tfds')  # doctest: +SKIP
  >>> result.metrics[-1]['eval_accuracy']  # doctest: +SKIP
  0.97...
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from jax.experimental import multihost_utils

import bort_jax
from bort_jax import configs
from bort_jax.training import (
    checkpoint,
    input_pipeline,
    interrupt,
    metric_writers,
    metrics_log,
    modeling,
    numerics,
    optimizer_factory,
    parallel,
    preflight,
)
from bort_jax.training import step as train_step_lib
from bort_jax.training import workdir as workdir_lib
from bort_jax.training.errors import (
    CheckpointError,
    ConfigError,
    Interrupted,
    NonFiniteError,
    PreviousRunError,
    WorkdirError,
)

METRICS_FILE = metrics_log.METRICS_FILE

logger = logging.getLogger('bort_jax')


class TrainResult(NamedTuple):
  """What :func:`train_and_evaluate` returns.

  Attributes:
    state: the final train state (unreplicated under pmap).
    metrics: the records this call appended to ``metrics.jsonl``.
  """

  state: train_step_lib.TrainState
  metrics: list[dict[str, Any]]


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

  ``exclude`` are the config's ``bort_exclude`` patterns: the kernels the
  optimizer leaves out of the Bort term are left out of the report too.
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
  report = lambda state: orthogonality_summary(
      state.params, config.amplitude, tuple(config.bort_exclude)
  )
  multi_device_cpu = jax.default_backend() == 'cpu' and jax.device_count() > 1
  if config.parallel == 'pmap':
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
    evaluate = train_step_lib.make_eval_step(
        definition, axis_name=parallel.PMAP_AXIS
    )
    return CompiledSteps(
        train_step=jax.pmap(
            train, axis_name=parallel.PMAP_AXIS, donate_argnums=0
        ),
        eval_step=jax.pmap(evaluate, axis_name=parallel.PMAP_AXIS),
        report=jax.jit(lambda state: report(parallel.unreplicate(state))),
        put_batch=parallel.split_for_pmap,
        state_shardings=jax.tree.map(
            lambda _: jax.sharding.SingleDeviceSharding(jax.local_devices()[0]),
            template,
        ),
        replicate_state=parallel.replicate,
        get_state=parallel.unreplicate,
        sync_every_step=multi_device_cpu,
    )

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
      sync_every_step=multi_device_cpu,
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


def _host_scalars(tree) -> dict[str, float]:
  """Device scalars (or pmapped [devices] copies) -> floats."""
  return {
      k: float(np.asarray(v).reshape(-1)[0])
      for k, v in jax.device_get(tree).items()
  }


@jax.jit
def _accumulate(
    sums: dict[str, jax.Array], metrics: dict[str, jax.Array]
) -> dict[str, jax.Array]:
  """Adds a step's loss and accuracy to the sums; a non-finite loss is
  counted instead of added."""
  finite = jnp.isfinite(metrics['loss'])
  return {
      'loss': sums['loss'] + jnp.where(finite, metrics['loss'], 0.0),
      'accuracy': sums['accuracy']
      + jnp.where(finite, metrics['accuracy'], 0.0),
      'nonfinite': sums['nonfinite'] + (~finite).astype(jnp.int32),
  }


class _MetricsWindow:
  """Running sums of the train step's metrics since the last record.

  The sums stay on device (one small compiled add per step, no sync); they
  come to the host at records, checkpoints and finiteness checks. They are
  part of each checkpoint (its ``loop`` item, exact float32 values), so the
  record after a resume averages the same steps as in a run never stopped.
  """

  #: What :meth:`state_dict` returns for an empty window (the restore
  #: template: float32 sums as the train step's metrics, int32 counts).
  EMPTY = {
      'loss': np.zeros((), np.float32),
      'accuracy': np.zeros((), np.float32),
      'nonfinite': np.zeros((), np.int32),
      'steps': np.zeros((), np.int32),
      'first_step': np.full((), -1, np.int32),
  }

  def __init__(self):
    self.sums, self.steps, self.first_step = None, 0, None
    self._host = None

  def add(self, metrics: dict[str, jax.Array], step: int) -> None:
    if self.sums is None:
      self.sums = {
          'loss': jnp.zeros_like(metrics['loss']),
          'accuracy': jnp.zeros_like(metrics['accuracy']),
          'nonfinite': jnp.zeros(jnp.shape(metrics['loss']), jnp.int32),
      }
      self.first_step = step
    self.sums = _accumulate(self.sums, metrics)
    self.steps += 1
    self._host = None

  def host(self) -> dict[str, np.ndarray]:
    """The sums on the host (waits for the device)."""
    if self._host is None:
      self._host = (
          {}
          if self.sums is None
          else {k: np.asarray(v) for k, v in jax.device_get(self.sums).items()}
      )
    return self._host

  def nonfinite(self) -> int:
    """Steps since the last record whose loss was NaN or infinite."""
    sums = self.host()
    return int(sums['nonfinite'].reshape(-1)[0]) if sums else 0

  def state_dict(self) -> dict[str, np.ndarray]:
    """The window as scalar arrays (a checkpoint's ``loop`` item); the
    layout of :attr:`EMPTY`."""
    saved = dict(self.EMPTY)
    for name, value in self.host().items():  # pmap: equal per-device copies
      saved[name] = np.asarray(value).reshape(-1)[0].astype(saved[name].dtype)
    saved['steps'] = np.asarray(self.steps, np.int32)
    if self.first_step is not None:
      saved['first_step'] = np.asarray(self.first_step, np.int32)
    return saved

  def load(self, saved: dict[str, Any] | None) -> None:
    """The inverse of :meth:`state_dict`."""
    self.sums, self.steps, self.first_step, self._host = None, 0, None, None
    if saved is None or not int(np.asarray(saved['steps'])):
      return
    self.sums = {
        name: np.asarray(saved[name])
        for name in ('loss', 'accuracy', 'nonfinite')
    }
    self.steps = int(np.asarray(saved['steps']))
    self.first_step = int(np.asarray(saved['first_step']))

  def means(self) -> dict[str, Any]:
    """``{'train_loss': ..., 'train_accuracy': ...}`` since the last call
    (finite steps only; ``nonfinite_steps`` if some were not); resets."""
    if not self.steps:
      return {}
    sums = {k: float(v.reshape(-1)[0]) for k, v in self.host().items()}
    finite = self.steps - int(sums['nonfinite'])
    means = {
        'train_loss': sums['loss'] / finite if finite else None,
        'train_accuracy': sums['accuracy'] / finite if finite else None,
    }
    if sums['nonfinite']:
      means['nonfinite_steps'] = int(sums['nonfinite'])
    self.sums, self.steps, self.first_step, self._host = None, 0, None, None
    return means


def read_metrics(workdir: str | os.PathLike[str]) -> list[dict[str, Any]]:
  """The records of ``WORKDIR/metrics.jsonl``, oldest first ([] if none)."""
  return metrics_log.read_records(Path(workdir) / METRICS_FILE)


def last_evaluation(workdir: str | os.PathLike[str]) -> dict[str, Any]:
  """The last record of ``WORKDIR/metrics.jsonl`` with eval figures ({} if none)."""
  return next(
      (r for r in reversed(read_metrics(workdir)) if 'eval_accuracy' in r), {}
  )


#: Appends strict JSON lines to ``metrics.jsonl`` (see :mod:`metrics_log`).
MetricsWriter = metrics_log.MetricsLog


class _StepTimer:
  """Mean wall time per train step between laps, compilation excluded.

  The first step of a run (which compiles) only starts the clock; later
  laps wait for the device before reading it.
  """

  def __init__(self):
    self.started = False
    self.start = 0.0
    self.steps = 0

  def count_step(self) -> None:
    if self.started:
      self.steps += 1
    else:
      self.restart()
      self.started = True

  def restart(self) -> None:
    self.start, self.steps = time.perf_counter(), 0

  def lap(self, state) -> float | None:
    """Seconds per step since the last (re)start, ``None`` if no step was timed."""
    if not self.steps:
      return None
    jax.block_until_ready(state)
    return (time.perf_counter() - self.start) / self.steps


def _check_max_steps(max_steps: Any) -> None:
  if max_steps is None:
    return
  if (
      isinstance(max_steps, bool)
      or not isinstance(max_steps, (int, np.integer))
      or max_steps < 0
  ):
    raise ConfigError(
        f'max_steps must be a non-negative integer, got {max_steps!r}'
    )


def _claim_workdir(
    workdir: Path,
    config: ml_collections.ConfigDict,
    *,
    resume: bool,
    overwrite: bool,
) -> None:
  """Refuses a work directory holding another run unless resuming the same
  config or overwriting; removes the old run's files for ``overwrite``."""
  found = workdir_lib.previous_run(workdir)
  if not found:
    return
  if overwrite:
    if jax.process_index() == 0:
      workdir_lib.remove_run(workdir)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('bort_jax: previous run removed')
    return
  if not resume:
    raise PreviousRunError(
        f'{workdir} holds a previous run ({workdir_lib.describe_run(found)}); '
        'pass resume=True (--resume) to continue it, overwrite=True '
        '(--overwrite) to discard it, or use another work directory'
    )
  if 'config' not in found:
    raise PreviousRunError(
        f'{workdir} holds {workdir_lib.describe_run(found)} but no '
        f'{checkpoint.CONFIG_FILE}, so it cannot be checked to be the same '
        'run; use --overwrite or another work directory'
    )
  saved = configs.to_dict(checkpoint.load_config(workdir))
  now = configs.to_dict(config)
  changed = {k: (v, now.get(k)) for k, v in saved.items() if now.get(k) != v}
  if changed:
    raise ConfigError(
        f'cannot resume {workdir} with a different config; changed (saved, '
        f'now): {changed}. Resume with the saved config (omit --config), '
        'or start over with --overwrite'
    )


def _owner_lock(workdir: Path):
  """Process 0 owns the work directory (the others share its file system)."""
  if jax.process_index() == 0:
    return workdir_lib.WorkdirLock(workdir)
  return contextlib.nullcontext()


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike[str],
    *,
    data_dir: str | None = None,
    download: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    allow_unverified: bool = False,
    max_steps: int | None = None,
    progress: bool = True,
    description: str | None = None,
    handle_signals: bool = True,
) -> TrainResult:
  """Trains ``config`` in ``workdir``, evaluating after each epoch.

  Before anything is written, the config is validated against its data,
  devices and model (:mod:`bort_jax.training.preflight`) and the work
  directory checked: it must be a writable directory, not in use by
  another process (:class:`~bort_jax.training.workdir.WorkdirLock`), and
  hold no other run unless ``resume`` (same config) or ``overwrite``.

  Faults: a non-finite training loss or parameters stop the run with
  :class:`~bort_jax.training.errors.NonFiniteError` without saving that
  state (unless ``config.skip_nonfinite_steps``). Finiteness is checked on
  the running loss sums already kept for logging, when they come to the
  host: at each record and before each checkpoint (with the parameters,
  one reduction on device), not at every step. SIGINT/SIGTERM save a
  checkpoint and raise :class:`~bort_jax.training.errors.Interrupted`.

  Args:
    config: the run's settings (:mod:`bort_jax.configs`); validated first.
    workdir: where ``config.json``, ``checkpoints/`` and ``metrics.jsonl`` go.
    data_dir: tfds data dir.
    download: let tfds download the data set if missing (needs internet).
    resume: continue from the newest verified checkpoint in ``workdir``
      (:func:`bort_jax.training.checkpoint.restore_verified`); records of
      ``metrics.jsonl`` after it are dropped.
    overwrite: delete a previous run's files in ``workdir`` first.
    allow_unverified: resuming, accept a checkpoint that has no record to
      verify it by (with a warning); otherwise such a checkpoint is
      unusable.
    max_steps: stop (with a checkpoint) once the global step reaches this,
      e.g. to interrupt a run that a later ``resume=True`` call continues.
    progress: show a tqdm progress bar (process 0).
    description: the progress bar's label (default: the optimizer).
    handle_signals: checkpoint and stop on SIGINT/SIGTERM (main thread).

  Returns:
    A :class:`TrainResult` with the final state and the metric records
    written by this call.

  Raises:
    ConfigError: a config value or argument no run can use.
    WorkdirError, PreviousRunError: the work directory cannot be used.
    NonFiniteError: the loss or the parameters stopped being finite.
    CheckpointError: resuming, no checkpoint restores and verifies.
    Interrupted: SIGINT/SIGTERM; the checkpoint is saved (or, during the
      start-up, nothing was written).
  """
  # Signals are recorded from the start: one during the start-up (data,
  # compilation) stops the run before anything is written.
  with interrupt.InterruptWatcher(enabled=handle_signals) as watcher:
    return _start(
        config,
        workdir,
        watcher,
        data_dir=data_dir,
        download=download,
        resume=resume,
        overwrite=overwrite,
        allow_unverified=allow_unverified,
        max_steps=max_steps,
        progress=progress,
        description=description,
    )


def _start(
    config,
    workdir,
    watcher,
    *,
    data_dir,
    download,
    resume,
    overwrite,
    allow_unverified,
    max_steps,
    progress,
    description,
) -> TrainResult:
  """:func:`train_and_evaluate` under its interrupt watcher."""
  configs.validate(config)
  optimizer_factory.split_name(config.optimizer)  # an unknown name fails now
  _check_max_steps(max_steps)
  if resume and overwrite:
    raise ConfigError(
        'resume and overwrite exclude each other: resume '
        'continues the run in the work directory, overwrite '
        'discards it'
    )
  workdir = Path(workdir)
  try:
    if workdir.exists() and not workdir.is_dir():
      raise WorkdirError(f'work directory {workdir} is a file, not a directory')
  except OSError as error:  # a name too long, a loop of links...
    raise ConfigError(
        f'work directory {workdir}: {error.strerror or error}'
    ) from None
  train_source, eval_source = input_pipeline.open_splits(
      config, data_dir=data_dir, download=download
  )
  preflight.check_batch_sizes(
      batch_size=config.batch_size,
      eval_batch_size=config.eval_batch_size,
      train_examples=len(train_source),
      devices=jax.device_count(),
      processes=jax.process_count(),
      local_devices=jax.local_device_count(),
      pmap=config.parallel == 'pmap',
  )
  preflight.check_model_kwargs(config, modeling.model_kwargs(config))
  steps_per_epoch = input_pipeline.steps_per_epoch(config, train_source)
  total_steps = config.epochs * steps_per_epoch
  stop_step = total_steps if max_steps is None else min(max_steps, total_steps)

  tx, schedule = optimizer_factory.optimizer_from_config(
      config, steps_per_epoch
  )
  if config.skip_nonfinite_steps:
    tx = optax.apply_if_finite(tx, config.max_consecutive_nonfinite)

  def initialize():
    model = modeling.model_from_config(config)
    return train_step_lib.create_train_state(
        model, tx, jax.random.key(config.seed)
    )

  try:
    definition, abstract_state = jax.eval_shape(initialize)
  except TypeError as error:
    config_error = preflight.model_build_error(config, error)
    if config_error is None:
      raise
    raise config_error from error
  except (ValueError, ArithmeticError) as error:  # e.g. a layer of width 0
    raise ConfigError(
        f'model_kwargs {configs.to_dict(config).get("model_kwargs")} cannot '
        f'build model {config.model!r}: {type(error).__name__}: {error}'
    ) from error
  steps = compile_steps(config, definition, tx, abstract_state)

  if jax.process_count() == 1 and watcher.signal_number is not None:
    raise Interrupted(None, watcher.signal_number)
  workdir_lib.check_directory(workdir)
  checkpoint.check_folders(workdir)
  for name in (checkpoint.CONFIG_FILE, METRICS_FILE):
    path = workdir / name
    if (path.exists() or path.is_symlink()) and not path.is_file():
      raise WorkdirError(f'{path} is not a regular file; move it away')
  with _owner_lock(workdir):
    _claim_workdir(workdir, config, resume=resume, overwrite=overwrite)
    if jax.process_count() > 1:  # every process has looked before any writes
      multihost_utils.sync_global_devices('bort_jax: work directory claimed')
    checkpoint.save_config(workdir, config)
    manager = checkpoint.checkpoint_manager(
        workdir, max_to_keep=config.keep_checkpoints
    )
    watcher.manager = manager
    try:
      return _run(
          config,
          workdir,
          steps,
          manager,
          watcher,
          initialize,
          abstract_state,
          schedule,
          train_source,
          eval_source,
          steps_per_epoch=steps_per_epoch,
          stop_step=stop_step,
          resume=resume,
          allow_unverified=allow_unverified,
          progress=progress,
          description=description,
      )
    finally:
      checkpoint.finish(manager)


def _run(
    config,
    workdir,
    steps,
    manager,
    watcher,
    initialize,
    abstract_state,
    schedule,
    train_source,
    eval_source,
    *,
    steps_per_epoch,
    stop_step,
    resume,
    allow_unverified,
    progress,
    description,
) -> TrainResult:
  """The loop of :func:`train_and_evaluate`, in a claimed work directory."""
  window = _MetricsWindow()
  restored = None
  if resume:
    restored = checkpoint.restore_verified(
        manager,
        jax.tree.map(
            lambda x, sharding: jax.ShapeDtypeStruct(
                x.shape, x.dtype, sharding=sharding
            ),
            abstract_state,
            steps.state_shardings,
        ),
        loop_template=_MetricsWindow.EMPTY,
        data=True,
        allow_unverified=allow_unverified,
    )
  if restored is not None:
    state = restored.state
    if not bool(jax.device_get(numerics.all_finite(state.params))):
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
    window.load(restored.loop)
  else:
    state = initialize_state(lambda: initialize()[1], steps.state_shardings)
  state = steps.replicate_state(state)
  step = int(
      np.asarray(jax.device_get(state.step)).reshape(-1)[0]
  )  # pmap: one per device
  if jax.process_index() == 0:
    dropped = metrics_log.truncate_after(workdir / METRICS_FILE, step)
    if dropped:
      logger.warning(
          '%s: dropped %d record(s) after step %d, the checkpoint '
          'resumed from',
          workdir / METRICS_FILE,
          dropped,
          step,
      )

  try:
    train_batches = input_pipeline.TrainBatches.resume(
        config,
        train_source,
        step=step,
        saved=None if restored is None else restored.data,
    )
  except ValueError as error:
    raise CheckpointError(
        f'checkpoint {step} in {manager.directory}: {error}'
    ) from None
  writer = metrics_log.MetricsLog(workdir)
  # Event files beside metrics.jsonl; a resumed run hides the stopped run's
  # events after its checkpoint, as metrics.jsonl drops them.
  tensorboard = metric_writers.TensorBoardWriter(
      workdir, purge_step=step + 1 if step else None
  )
  records = []
  saved_step = step
  # disable=None: no bar when stderr is not a terminal (a log file).
  bar = tqdm.tqdm(
      total=stop_step,
      initial=step,
      unit='step',
      dynamic_ncols=True,
      desc=description or config.optimizer,
      disable=None if progress and jax.process_index() == 0 else True,
  )
  start_time = time.perf_counter()
  timer = _StepTimer()

  def check_finite(params_too: bool) -> None:
    """Raises NonFiniteError if the window's losses (or the params) are not
    finite; the state is then not saved."""
    bad_steps = 0 if config.skip_nonfinite_steps else window.nonfinite()
    if bad_steps:
      raise NonFiniteError(
          f'non-finite training loss (NaN or infinity) in {bad_steps} of the '
          f'steps {window.first_step}..{step}; stopped without saving that '
          f'state: the newest checkpoint, step {saved_step}, is the last '
          'finite one. Lower learning_rate, or set skip_nonfinite_steps=True '
          'to skip such steps'
      )
    if params_too and not bool(
        jax.device_get(numerics.all_finite(steps.get_state(state).params))
    ):
      raise NonFiniteError(
          f'non-finite parameters at step {step}'
          + (
              f' ({config.max_consecutive_nonfinite} non-finite updates in a '
              'row were skipped, then applied)'
              if config.skip_nonfinite_steps
              else ''
          )
          + f'; stopped without saving them: the newest checkpoint, step '
          f'{saved_step}, is the last finite one. Lower learning_rate'
      )

  def save() -> None:
    nonlocal saved_step
    check_finite(params_too=True)
    checkpoint.save_state(
        manager,
        steps.get_state(state),
        loop_state=window.state_dict(),
        data_state=train_batches.state(),
    )
    saved_step = step

  def stop_now() -> None:
    """On SIGINT/SIGTERM: checkpoints the step and raises Interrupted."""
    if watcher.should_stop(step):
      if saved_step != step:
        save()
      raise Interrupted(step, watcher.signal_number)

  def record(
      epoch: float, extra: dict[str, Any], step_time: float | None
  ) -> dict[str, Any]:
    check_finite(params_too=False)
    line = {
        'step': step,
        'epoch': epoch,
        **window.means(),
        **extra,
        'learning_rate': float(schedule(max(step - 1, 0))),
    }
    if step_time is not None:
      line['step_time'] = step_time
    line['elapsed'] = time.perf_counter() - start_time
    # The one place records leave the loop: other writers go here too.
    line = writer.write(line)
    tensorboard.write(line)
    records.append(line)
    return line

  try:
    for epoch in range(step // steps_per_epoch, config.epochs):
      if step >= stop_step:
        break
      for batch in train_batches.take(steps_per_epoch - step % steps_per_epoch):
        state, metrics = steps.train_step(state, steps.put_batch(batch))
        step += 1
        window.add(metrics, step)
        if steps.sync_every_step or not timer.started:
          jax.block_until_ready(state)
        timer.count_step()
        bar.update()
        if not step % steps_per_epoch:
          break  # the epoch's record, checkpoint and stop come after its eval
        if config.log_every_steps and step % config.log_every_steps == 0:
          line = record(step / steps_per_epoch, {}, timer.lap(state))
          bar.set_postfix(loss=_format_loss(line.get('train_loss')))
          timer.restart()
        if (
            config.checkpoint_every_steps
            and step % config.checkpoint_every_steps == 0
        ):
          save()
        stop_now()
        if step >= stop_step:
          break
      if step % steps_per_epoch:  # stopped mid-epoch
        break
      step_time = timer.lap(state)
      check_finite(params_too=True)
      extra = evaluate(
          steps, state, input_pipeline.eval_batches(config, eval_source)
      )
      extra['orthogonality'] = _host_scalars(steps.report(state))
      line = record(epoch + 1, extra, step_time)
      # Orthogonality figures are NaN without constrained kernels: only the
      # loss and accuracy decide.
      bad = [
          name
          for name in line.get('nonfinite', [])
          if name.startswith(('eval_', 'train_'))
      ]
      if epoch + 1 == config.epochs and line.get('train_loss', 0.0) is None:
        bad.append('train_loss (every step of the record skipped)')
      if bad:
        raise NonFiniteError(
            f'non-finite figures at step {step} (epoch {epoch + 1}): '
            f'{", ".join(bad)} in {writer.path}; stopped without saving that '
            f'state: the newest checkpoint is step {saved_step}. Lower '
            'learning_rate'
        )
      bar.set_postfix(
          loss=_format_loss(line.get('train_loss')),
          eval_acc=_format_loss(line.get('eval_accuracy')),
      )
      if saved_step != step:
        save()
      stop_now()
      timer.restart()
    if saved_step != step:
      save()
  finally:
    bar.close()
    tensorboard.close()  # also when stopped by a fault or a signal
    train_batches.close()
  return TrainResult(state=steps.get_state(state), metrics=records)


def _format_loss(value: float | None) -> str:
  return 'nan' if value is None else f'{value:.4f}'
