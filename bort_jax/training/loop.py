"""The training loop: train, evaluate each epoch, log, checkpoint, resume.

:func:`train_and_evaluate` runs a config (:mod:`bort_jax.configs`) in a work
directory::

  WORKDIR/config.json     the config
  WORKDIR/checkpoints/    orbax checkpoints (each epoch end, and on stopping)
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

A run is a function of its config: the batches depend only on
``(seed, epoch, step)`` and every random number lives in the train state, so
a run stopped (``max_steps``) and resumed ends with the same parameters, bit
for bit on CPU, as one that was never stopped.

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

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

import bort_jax
from bort_jax import configs
from bort_jax.training import checkpoint
from bort_jax.training import input_pipeline
from bort_jax.training import modeling
from bort_jax.training import optimizer_factory
from bort_jax.training import parallel
from bort_jax.training import step as train_step_lib

METRICS_FILE = 'metrics.jsonl'


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


def orthogonality_summary(params, amplitude) -> dict[str, jax.Array]:
  """:func:`bort_jax.summarize_report` of the constrained kernels."""
  return bort_jax.summarize_report(bort_jax.orthogonality_report(params, amplitude=amplitude))


def compile_steps(config: ml_collections.ConfigDict, definition: train_step_lib.ModelDefinition, tx,
                  template: train_step_lib.TrainState) -> CompiledSteps:
  """Compiles the steps for ``config.parallel`` (``jit`` over a mesh, or ``pmap``).

  Args:
    config: uses ``parallel``, ``param_sharding``, ``fsdp_min_size``,
      ``label_smoothing`` and ``amplitude``.
    definition: from :func:`bort_jax.training.step.create_train_state`.
    tx: the optimizer.
    template: the train state or its shapes (``jax.eval_shape``), for the
      shardings.
  """
  report = lambda state: orthogonality_summary(state.params, config.amplitude)
  multi_device_cpu = jax.default_backend() == 'cpu' and jax.device_count() > 1
  if config.parallel == 'pmap':
    if jax.process_count() > 1:
      raise ValueError('parallel=pmap runs on one process; use parallel=jit across hosts')
    train = train_step_lib.make_train_step(
        definition, tx, label_smoothing=config.label_smoothing, axis_name=parallel.PMAP_AXIS)
    evaluate = train_step_lib.make_eval_step(definition, axis_name=parallel.PMAP_AXIS)
    return CompiledSteps(
        train_step=jax.pmap(train, axis_name=parallel.PMAP_AXIS, donate_argnums=0),
        eval_step=jax.pmap(evaluate, axis_name=parallel.PMAP_AXIS),
        report=jax.jit(lambda state: report(parallel.unreplicate(state))),
        put_batch=parallel.split_for_pmap,
        state_shardings=jax.tree.map(
            lambda _: jax.sharding.SingleDeviceSharding(jax.local_devices()[0]), template),
        replicate_state=parallel.replicate,
        get_state=parallel.unreplicate,
        sync_every_step=multi_device_cpu,
    )

  mesh = parallel.create_mesh()
  state_shardings = parallel.state_sharding(
      template, mesh, fsdp=config.param_sharding == 'fsdp', min_size=config.fsdp_min_size)
  batch_sharding = parallel.batch_sharding(mesh)
  replicated = parallel.replicated(mesh)
  train = train_step_lib.make_train_step(
      definition, tx, label_smoothing=config.label_smoothing)
  return CompiledSteps(
      train_step=jax.jit(train, in_shardings=(state_shardings, batch_sharding),
                         out_shardings=(state_shardings, replicated), donate_argnums=0),
      eval_step=jax.jit(train_step_lib.make_eval_step(definition),
                        in_shardings=(state_shardings, batch_sharding), out_shardings=replicated),
      report=jax.jit(report, in_shardings=(state_shardings,), out_shardings=replicated),
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


def initialize_state(initialize: Callable[[], Any], shardings: Any = None) -> Any:
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
  options = CPU_INIT_COMPILER_OPTIONS if jax.default_backend() == 'cpu' else None
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
  totals = jax.tree.map(lambda x: float(np.asarray(x).reshape(-1)[0]), jax.device_get(totals))
  count = max(totals['count'], 1.0)
  return {'eval_loss': totals['loss_sum'] / count,
          'eval_accuracy': totals['correct'] / count,
          'eval_count': int(totals['count'])}


def _host_scalars(tree) -> dict[str, float]:
  """Device scalars (or pmapped [devices] copies) -> floats."""
  return {k: float(np.asarray(v).reshape(-1)[0]) for k, v in jax.device_get(tree).items()}


class _MetricsWindow:
  """Running sums of the train step's metrics, on device (no per-step sync)."""

  def __init__(self):
    self.sums, self.steps = None, 0

  def add(self, metrics: dict[str, jax.Array]) -> None:
    self.sums = metrics if self.sums is None else jax.tree.map(jnp.add, self.sums, metrics)
    self.steps += 1

  def means(self) -> dict[str, float]:
    """``{'train_loss': ..., 'train_accuracy': ...}`` since the last call; resets."""
    if not self.steps:
      return {}
    means = {f'train_{k}': v / self.steps for k, v in _host_scalars(self.sums).items()}
    self.sums, self.steps = None, 0
    return means


def read_metrics(workdir: str | os.PathLike[str]) -> list[dict[str, Any]]:
  """The records of ``WORKDIR/metrics.jsonl``, oldest first ([] if none)."""
  path = Path(workdir) / METRICS_FILE
  if not path.is_file():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line]


def last_evaluation(workdir: str | os.PathLike[str]) -> dict[str, Any]:
  """The last record of ``WORKDIR/metrics.jsonl`` with eval figures ({} if none)."""
  return next((r for r in reversed(read_metrics(workdir))
               if 'eval_accuracy' in r), {})


class MetricsWriter:
  """Appends JSON lines to ``WORKDIR/metrics.jsonl`` (process 0 only)."""

  def __init__(self, workdir: str | os.PathLike[str]):
    self.path = Path(workdir) / METRICS_FILE
    self.enabled = jax.process_index() == 0

  def write(self, record: dict[str, Any]) -> None:
    if self.enabled:
      with self.path.open('a') as f:
        f.write(json.dumps(record) + '\n')


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


def _check_resumable(workdir: Path, config: ml_collections.ConfigDict, resume: bool,
                     manager) -> None:
  if manager.latest_step() is None:
    return
  if not resume:
    raise FileExistsError(
        f'{workdir} already holds checkpoints (latest step {manager.latest_step()}); pass '
        'resume=True (--resume) to continue that run, or use another work directory')
  saved = configs.to_dict(checkpoint.load_config(workdir))
  now = configs.to_dict(config)
  changed = {k: (v, now[k]) for k, v in saved.items() if now[k] != v}
  if changed:
    raise ValueError(
        f'cannot resume {workdir} with a different config; changed (saved, now): {changed}')


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike[str],
    *,
    data_dir: str | None = None,
    download: bool = False,
    resume: bool = False,
    max_steps: int | None = None,
    progress: bool = True,
    description: str | None = None,
) -> TrainResult:
  """Trains ``config`` in ``workdir``, evaluating after each epoch.

  Args:
    config: the run's settings (:mod:`bort_jax.configs`); validated first.
    workdir: where ``config.json``, ``checkpoints/`` and ``metrics.jsonl`` go.
    data_dir: tfds data dir.
    download: let tfds download the data set if missing (needs internet).
    resume: continue from the latest checkpoint in ``workdir``. Without it a
      work directory holding checkpoints is an error.
    max_steps: stop (with a checkpoint) once the global step reaches this,
      e.g. to interrupt a run that a later ``resume=True`` call continues.
    progress: show a tqdm progress bar (process 0).
    description: the progress bar's label (default: the optimizer).

  Returns:
    A :class:`TrainResult` with the final state and the metric records
    written by this call.
  """
  configs.validate(config)
  optimizer_factory.split_name(config.optimizer)  # an unknown name fails now
  workdir = Path(workdir)
  train_source, eval_source = input_pipeline.open_splits(
      config, data_dir=data_dir, download=download)
  steps_per_epoch = input_pipeline.steps_per_epoch(config, train_source)
  total_steps = config.epochs * steps_per_epoch
  stop_step = total_steps if max_steps is None else min(max_steps, total_steps)

  tx, schedule = optimizer_factory.optimizer_from_config(config, steps_per_epoch)
  def initialize():
    model = modeling.model_from_config(config)
    return train_step_lib.create_train_state(model, tx, jax.random.key(config.seed))

  definition, abstract_state = jax.eval_shape(initialize)
  steps = compile_steps(config, definition, tx, abstract_state)

  manager = checkpoint.checkpoint_manager(workdir, max_to_keep=config.keep_checkpoints)
  _check_resumable(workdir, config, resume, manager)
  checkpoint.save_config(workdir, config)
  if resume and manager.latest_step() is not None:
    state = checkpoint.restore_state(manager, jax.tree.map(
        lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
        abstract_state, steps.state_shardings))
  else:
    state = initialize_state(lambda: initialize()[1], steps.state_shardings)
  state = steps.replicate_state(state)

  writer = MetricsWriter(workdir)
  records = []
  step = int(np.asarray(jax.device_get(state.step)).reshape(-1)[0])  # pmap: one per device
  saved_step = step
  bar = tqdm.tqdm(total=stop_step, initial=step, unit='step', dynamic_ncols=True,
                  desc=description or config.optimizer,
                  disable=not progress or jax.process_index() != 0)
  start_time = time.perf_counter()
  timer = _StepTimer()
  window = _MetricsWindow()

  def record(epoch: float, extra: dict[str, Any], step_time: float | None) -> dict[str, Any]:
    line = {'step': step, 'epoch': epoch, **window.means(), **extra,
            'learning_rate': float(schedule(max(step - 1, 0)))}
    if step_time is not None:
      line['step_time'] = step_time
    line['elapsed'] = time.perf_counter() - start_time
    writer.write(line)
    records.append(line)
    return line

  for epoch in range(step // steps_per_epoch, config.epochs):
    if step >= stop_step:
      break
    for batch in input_pipeline.train_batches(
        config, train_source, epoch=epoch, start_step=step % steps_per_epoch):
      state, metrics = steps.train_step(state, steps.put_batch(batch))
      step += 1
      window.add(metrics)
      if steps.sync_every_step or not timer.started:
        jax.block_until_ready(state)
      timer.count_step()
      bar.update()
      if (config.log_every_steps and step % config.log_every_steps == 0
          and step % steps_per_epoch and step < stop_step):
        line = record(step / steps_per_epoch, {}, timer.lap(state))
        bar.set_postfix(loss=f"{line['train_loss']:.4f}")
        timer.restart()
      if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0:
        checkpoint.save_state(manager, steps.get_state(state))
        saved_step = step
      if step >= stop_step:
        break
    if step % steps_per_epoch:  # stopped mid-epoch
      break
    step_time = timer.lap(state)
    extra = evaluate(steps, state, input_pipeline.eval_batches(config, eval_source))
    extra['orthogonality'] = _host_scalars(steps.report(state))
    line = record(epoch + 1, extra, step_time)
    bar.set_postfix(loss=f"{line.get('train_loss', float('nan')):.4f}",
                    eval_acc=f"{line['eval_accuracy']:.4f}")
    if saved_step != step:
      checkpoint.save_state(manager, steps.get_state(state))
      saved_step = step
    timer.restart()
  if saved_step != step:
    checkpoint.save_state(manager, steps.get_state(state))
  manager.wait_until_finished()
  manager.close()
  bar.close()
  return TrainResult(state=steps.get_state(state), metrics=records)
