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

A run is a function of its config: the batches depend only on ``(seed, epoch,
step)`` and every random number lives in the train state, so a run stopped
(``max_steps``, SIGINT/SIGTERM, ``kill -9``) and resumed ends with the same
parameters, bit for bit on CPU, as one that was never stopped;
``metrics.jsonl`` is cut back to the checkpoint resumed from and the running
sums of the current record are restored with it (they are part of the
checkpoint), so the records match too (timings aside). The input iterator's
position is part of each checkpoint as well: a run stopped mid-epoch goes on
at the next batch, also with another number of data worker processes (the
iterator is then rebuilt at the checkpoint's step). An epoch-end checkpoint
always follows that epoch's evaluation record, so no resume skips an
evaluation.

This is the one training loop of the package: ``bort-train`` and
``bort-explain`` both train through it. It is built of pieces, each in its
module:

* :mod:`~bort_jax.training.loop_settings`: what the loop reads from the
  config, read once;
* :mod:`~bort_jax.training.compiled_steps`: the train, eval and report steps,
  compiled for the devices;
* :mod:`~bort_jax.training.resumption`: the checkpoint resumed from, checked,
  and the input batches from its step;
* :mod:`~bort_jax.training.trainer`: the steps of an epoch, with the records
  and checkpoints within it;
* :mod:`~bort_jax.training.saver`: checkpoints of finite states only; the
  stop on a signal;
* :mod:`~bort_jax.training.reporting`: records to ``metrics.jsonl`` and
  TensorBoard, step times, the progress bar.

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
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import ml_collections
import optax
from jax.experimental import multihost_utils

from bort_jax import configs
from bort_jax.training import (
    checkpoint,
    input_pipeline,
    interrupt,
    metrics_io,
    modeling,
    optimizer_factory,
    preflight,
    reporting,
    resumption,
)
from bort_jax.training import step as train_step_lib
from bort_jax.training import workdir as workdir_lib
from bort_jax.training.compiled_steps import (
    CPU_INIT_COMPILER_OPTIONS,
    CompiledSteps,
    compile_steps,
    evaluate,
    host_scalars,
    initialize_state,
    orthogonality_summary,
)
from bort_jax.training.errors import (
    ConfigError,
    Interrupted,
    PreviousRunError,
    WorkdirError,
)
from bort_jax.training.loop_settings import LoopSettings, check_max_steps
from bort_jax.training.saver import Saver
from bort_jax.training.trainer import Trainer

METRICS_FILE = metrics_io.METRICS_FILE

#: Appends strict JSON lines to ``metrics.jsonl`` (see :mod:`metrics_io`).
MetricsWriter = metrics_io.MetricsLog


class TrainResult(NamedTuple):
  """What :func:`train_and_evaluate` returns.

  Attributes:
    state: the final train state (unreplicated under pmap).
    metrics: the records this call appended to ``metrics.jsonl``.
  """

  state: train_step_lib.TrainState
  metrics: list[dict[str, Any]]


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
  hold no other run unless ``resume`` (same config, its
  :data:`~bort_jax.configs.EXECUTION_FIELDS` aside) or ``overwrite``.

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
    workdir = _check_arguments(
        config, workdir, max_steps=max_steps, resume=resume, overwrite=overwrite
    )
    prepared = _prepare(
        config,
        data_dir=data_dir,
        download=download,
        max_steps=max_steps,
        progress=progress,
        description=description,
    )
    if jax.process_count() == 1 and watcher.signal_number is not None:
      raise Interrupted(None, watcher.signal_number)
    _check_workdir(workdir)
    with _owner_lock(workdir):
      manager = _claim(workdir, config, resume=resume, overwrite=overwrite)
      watcher.manager = manager
      try:
        return _run(
            prepared,
            workdir,
            manager,
            watcher,
            resume=resume,
            allow_unverified=allow_unverified,
        )
      finally:
        checkpoint.finish(manager)


def read_metrics(workdir: str | os.PathLike[str]) -> list[dict[str, Any]]:
  """The records of ``WORKDIR/metrics.jsonl``, oldest first ([] if none)."""
  return metrics_io.read_records(Path(workdir) / METRICS_FILE)


def last_evaluation(workdir: str | os.PathLike[str]) -> dict[str, Any]:
  """The last record of ``WORKDIR/metrics.jsonl`` with eval figures ({} if none)."""
  return next(
      (r for r in reversed(read_metrics(workdir)) if 'eval_accuracy' in r), {}
  )


# The start-up: arguments, data, model and compiled steps, before anything is
# written.


def _check_arguments(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike[str],
    *,
    max_steps: Any,
    resume: bool,
    overwrite: bool,
) -> Path:
  """Raises ConfigError (or WorkdirError) for arguments no run can use;
  returns the work directory as a path."""
  configs.validate(config)
  check_max_steps(max_steps)
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
  return workdir


class _Prepared(NamedTuple):
  """What the start-up makes of a config (nothing written yet).

  Attributes:
    config: the config (for the input pipeline).
    settings: the loop's settings.
    train_source: the training split.
    eval_source: the evaluation split.
    schedule: the learning-rate schedule.
    initialize: ``() -> (definition, state)``, a new train state.
    abstract_state: the train state's shapes.
    steps: the compiled steps.
  """

  config: ml_collections.ConfigDict
  settings: LoopSettings
  train_source: Any
  eval_source: Any
  schedule: Callable[[int], Any]
  initialize: Callable[[], Any]
  abstract_state: Any
  steps: CompiledSteps


def _prepare(
    config: ml_collections.ConfigDict,
    *,
    data_dir: str | None,
    download: bool,
    max_steps: int | None,
    progress: bool,
    description: str | None,
) -> _Prepared:
  """Opens the data, checks the config against it, builds and compiles."""
  train_source, eval_source = input_pipeline.open_splits(
      config, data_dir=data_dir, download=download
  )
  _preflight(config, train_source)
  settings = LoopSettings.from_config(
      config,
      steps_per_epoch=input_pipeline.steps_per_epoch(config, train_source),
      max_steps=max_steps,
      progress=progress,
      description=description,
  )
  tx, schedule = optimizer_factory.optimizer_from_config(
      config, settings.steps_per_epoch
  )
  if settings.skip_nonfinite_steps:
    tx = optax.apply_if_finite(tx, settings.max_consecutive_nonfinite)
  initialize = _state_initializer(config, tx)
  definition, abstract_state = _state_shapes(config, initialize)
  return _Prepared(
      config=config,
      settings=settings,
      train_source=train_source,
      eval_source=eval_source,
      schedule=schedule,
      initialize=initialize,
      abstract_state=abstract_state,
      steps=compile_steps(config, definition, tx, abstract_state),
  )


def _preflight(config: ml_collections.ConfigDict, train_source) -> None:
  """Checks the batch sizes against the data and devices, and the model's
  arguments (:mod:`bort_jax.training.preflight`)."""
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


def _state_initializer(
    config: ml_collections.ConfigDict, tx: optax.GradientTransformation
) -> Callable[[], Any]:
  """``() -> (definition, state)``: the model of ``config`` and a new state."""

  def initialize():
    model = modeling.model_from_config(config)
    return train_step_lib.create_train_state(
        model, tx, jax.random.key(config.seed)
    )

  return initialize


def _state_shapes(
    config: ml_collections.ConfigDict, initialize: Callable[[], Any]
) -> Any:
  """``jax.eval_shape(initialize)``; a model that cannot be built with the
  config's ``model_kwargs`` is a ConfigError."""
  try:
    return jax.eval_shape(initialize)
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


# The work directory: checked, locked and claimed.


def _check_workdir(workdir: Path) -> None:
  """Raises WorkdirError if ``workdir`` or the files a run keeps there
  cannot be used."""
  workdir_lib.check_directory(workdir)
  checkpoint.check_folders(workdir)
  for name in (checkpoint.CONFIG_FILE, METRICS_FILE):
    path = workdir / name
    if (path.exists() or path.is_symlink()) and not path.is_file():
      raise WorkdirError(f'{path} is not a regular file; move it away')


def _owner_lock(workdir: Path):
  """Process 0 owns the work directory (the others share its file system)."""
  if jax.process_index() == 0:
    return workdir_lib.WorkdirLock(workdir)
  return contextlib.nullcontext()


def _claim(
    workdir: Path,
    config: ml_collections.ConfigDict,
    *,
    resume: bool,
    overwrite: bool,
):
  """Claims ``workdir`` for ``config`` and saves the config there.

  Returns:
    The run's checkpoint manager.
  """
  _claim_workdir(workdir, config, resume=resume, overwrite=overwrite)
  if jax.process_count() > 1:  # every process has looked before any writes
    multihost_utils.sync_global_devices('bort_jax: work directory claimed')
  checkpoint.save_config(workdir, config)
  return checkpoint.checkpoint_manager(
      workdir, max_to_keep=config.keep_checkpoints
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
  changed = {
      k: (v, now.get(k))
      for k, v in saved.items()
      if now.get(k) != v and k not in configs.EXECUTION_FIELDS
  }
  if changed:
    raise ConfigError(
        f'cannot resume {workdir} with a different config; changed (saved, '
        f'now): {changed}. Resume with the saved config (omit --config), '
        'or start over with --overwrite'
    )


# The run: train epoch by epoch, evaluate, record, checkpoint.


def _run(
    prepared: _Prepared,
    workdir: Path,
    manager,
    watcher: interrupt.InterruptWatcher,
    *,
    resume: bool,
    allow_unverified: bool,
) -> TrainResult:
  """The loop of :func:`train_and_evaluate`, in a claimed work directory."""
  steps, settings = prepared.steps, prepared.settings
  window = reporting.MetricsWindow()
  state, saved_input = _starting_state(
      prepared,
      manager,
      window,
      resume=resume,
      allow_unverified=allow_unverified,
  )
  state = steps.replicate_state(state)
  step = resumption.host_step(state)
  resumption.drop_records_after(workdir, step)
  train_batches = resumption.train_batches(
      prepared.config,
      prepared.train_source,
      step=step,
      saved=saved_input,
      directory=manager.directory,
  )
  with (
      contextlib.closing(train_batches),
      reporting.Reporter(
          workdir, window, prepared.schedule, settings, step=step
      ) as reporter,
  ):
    saver = Saver(
        manager,
        watcher,
        window,
        steps.get_state,
        settings,
        saved_step=step,
        data_state=train_batches.state,
    )
    trainer = Trainer(settings, steps, reporter, saver, state, step)
    _train(trainer, prepared, train_batches)
  return TrainResult(
      state=steps.get_state(trainer.state), metrics=reporter.records
  )


def _starting_state(
    prepared: _Prepared,
    manager,
    window: reporting.MetricsWindow,
    *,
    resume: bool,
    allow_unverified: bool,
):
  """The newest verified checkpoint (resuming; ``window`` takes its running
  sums), else a new train state; one replica, with the checkpoint's input
  iterator state (``None`` for a new state)."""
  shardings = prepared.steps.state_shardings
  restored = None
  if resume:
    restored = resumption.restore(
        manager,
        prepared.abstract_state,
        shardings,
        allow_unverified=allow_unverified,
    )
  if restored is None:
    return (
        initialize_state(lambda: prepared.initialize()[1], shardings),
        None,
    )
  window.load(restored.loop)
  return restored.state, restored.data


def _train(
    trainer: Trainer,
    prepared: _Prepared,
    train_batches: input_pipeline.TrainBatches,
) -> None:
  """Trains from the trainer's step to ``stop_step``, epoch by epoch; each
  epoch's end is evaluated, recorded, then checkpointed."""
  settings = prepared.settings
  for epoch in range(trainer.step // settings.steps_per_epoch, settings.epochs):
    if trainer.step >= settings.stop_step:
      break
    trainer.train_epoch(
        train_batches.take(
            settings.steps_per_epoch - trainer.step % settings.steps_per_epoch
        )
    )
    if not settings.ends_epoch(trainer.step):  # stopped mid-epoch
      break
    _finish_epoch(trainer, prepared, epoch)
  trainer.saver.save_if_new(trainer.state, trainer.step)


def _finish_epoch(trainer: Trainer, prepared: _Prepared, epoch: int) -> None:
  """Epoch ``epoch`` (0 for the first) is trained: its evaluation record,
  then its checkpoint; stops on a signal."""
  state, step, reporter = trainer.state, trainer.step, trainer.reporter
  step_time = reporter.timer.lap(state)
  trainer.saver.check_finite(state, step, params_too=True)
  figures = evaluate(
      prepared.steps,
      state,
      input_pipeline.eval_batches(prepared.config, prepared.eval_source),
  )
  figures['orthogonality'] = host_scalars(prepared.steps.report(state))
  line = trainer.record(epoch + 1, figures, step_time)
  trainer.saver.check_epoch_record(
      line, step=step, epoch=epoch + 1, path=reporter.path
  )
  reporter.show(loss=line.get('train_loss'), eval_acc=line.get('eval_accuracy'))
  trainer.saver.save_if_new(state, step)
  trainer.saver.stop_if_signalled(state, step)
  reporter.timer.restart()


__all__ = [
    'CPU_INIT_COMPILER_OPTIONS',
    'CompiledSteps',
    'METRICS_FILE',
    'MetricsWriter',
    'TrainResult',
    'compile_steps',
    'evaluate',
    'initialize_state',
    'last_evaluation',
    'orthogonality_summary',
    'read_metrics',
    'train_and_evaluate',
]
