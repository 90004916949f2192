"""Orbax checkpoints of the train state, the run's ``config.json``, and
:func:`restore_model` to get a trained model back.

A work directory holds::

  WORKDIR/config.json          the config (bort_jax.configs; process 0 writes it)
  WORKDIR/checkpoints/<step>/  params, model_state, opt_state, progress
  WORKDIR/metrics.jsonl        see bort_jax.training.loop

RNG keys are stored as their raw ``uint32`` key data and wrapped again on
restore, so a resumed run continues with exactly the same random numbers.

Example:
  >>> model, config = restore_model('runs/mnist_cnn/bort_adamw')  # doctest: +SKIP
  >>> logits = model(images)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx

from bort_jax import configs
from bort_jax.training import modeling
from bort_jax.training import parallel
from bort_jax.training.step import TrainState

CONFIG_FILE = 'config.json'
CHECKPOINT_DIR = 'checkpoints'
STATE_ITEMS = ('params', 'model_state', 'opt_state', 'progress')

PyTree = Any


def save_config(workdir: str | os.PathLike[str],
                config: ml_collections.ConfigDict) -> Path:
  """Writes ``WORKDIR/config.json`` (on process 0) and returns its path."""
  path = Path(workdir) / CONFIG_FILE
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(configs.to_dict(config), indent=2) + '\n')
  return path


def load_config(workdir: str | os.PathLike[str]) -> ml_collections.ConfigDict:
  """Reads ``WORKDIR/config.json`` back into a validated config.

  Raises:
    FileNotFoundError: no ``config.json`` (not a ``bort-train`` work
      directory).
    ValueError: a field unknown to :mod:`bort_jax.configs`, or a bad value.
  """
  path = Path(workdir) / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(
        f'no {CONFIG_FILE} in {workdir}: not a bort-train work directory')
  return configs.from_dict(json.loads(path.read_text()))


def checkpoint_manager(workdir: str | os.PathLike[str], *,
                       max_to_keep: int | None = 2) -> ocp.CheckpointManager:
  """An orbax ``CheckpointManager`` over ``WORKDIR/checkpoints``."""
  directory = (Path(workdir) / CHECKPOINT_DIR).absolute()
  return ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def _keys_to_data(tree: PyTree) -> PyTree:
  """Typed PRNG keys -> their ``uint32`` data (arrays, or shape structs keeping their sharding)."""
  def convert(x):
    if not parallel.is_prng_key(x):
      return x
    if isinstance(x, jax.ShapeDtypeStruct):
      data = jax.eval_shape(jax.random.key_data, x)
      return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=x.sharding)
    return jax.random.key_data(x)
  return jax.tree.map(convert, tree)


def _data_to_keys(tree: PyTree, template: PyTree) -> PyTree:
  """Wraps key data back into keys where ``template`` has keys (of its
  implementation; the default one for abstract templates)."""
  def convert(x, t):
    if not parallel.is_prng_key(t):
      return x
    impl = None if isinstance(t, jax.ShapeDtypeStruct) else jax.random.key_impl(t)
    return jax.random.wrap_key_data(x, impl=impl)
  return jax.tree.map(convert, tree, template)


def _items(state: TrainState) -> dict[str, PyTree]:
  return {
      'params': state.params,
      'model_state': _keys_to_data(state.model_state),
      'opt_state': state.opt_state,
      'progress': {'step': state.step, 'rng': _keys_to_data(state.rng)},
  }


def save_state(manager: ocp.CheckpointManager, state: TrainState, *, step: int | None = None,
               force: bool = False) -> bool:
  """Saves ``state`` as checkpoint ``step`` (default: ``state.step``).

  Every process must call it (orbax writes the shards each one owns).
  Asynchronous: call ``manager.wait_until_finished()`` before exiting.

  Returns:
    Whether a checkpoint was saved.
  """
  step = int(jax.device_get(state.step)) if step is None else step
  args = {name: ocp.args.StandardSave(item) for name, item in _items(state).items()
          if jax.tree.leaves(item)}  # orbax refuses empty items (no BatchNorm, no RNG...)
  return manager.save(step, args=ocp.args.Composite(**args), force=force)


def _abstract(tree: PyTree) -> PyTree:
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def restore_state(manager: ocp.CheckpointManager, template: TrainState, *,
                  step: int | None = None) -> TrainState | None:
  """Restores a checkpoint into the structure, dtypes and shardings of ``template``.

  Args:
    manager: from :func:`checkpoint_manager`.
    template: a state of the same run, placed as the restored state should
      be: arrays, or ``jax.ShapeDtypeStruct`` with shardings (nothing needs
      to be initialised).
    step: checkpoint to restore (default: the latest).

  Returns:
    The restored :class:`TrainState`, or ``None`` if there is no checkpoint.
  """
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  items = _items(template)
  restored = manager.restore(step, args=ocp.args.Composite(
      **{name: ocp.args.StandardRestore(_abstract(item)) for name, item in items.items()
         if jax.tree.leaves(item)}))
  restored = {name: restored[name] if jax.tree.leaves(item) else item
              for name, item in items.items()}
  return TrainState(
      step=restored['progress']['step'],
      params=restored['params'],
      model_state=_data_to_keys(restored['model_state'], template.model_state),
      opt_state=restored['opt_state'],
      rng=_data_to_keys(restored['progress']['rng'], template.rng),
  )


def restore_model(workdir: str | os.PathLike[str], *,
                  step: int | None = None) -> tuple[nnx.Module, dict[str, Any]]:
  """Rebuilds a trained model from a ``bort-train`` work directory.

  The model is built from ``WORKDIR/config.json`` (shapes only, nothing is
  initialised) and gets the parameters and model state (BatchNorm
  statistics, RNG state) of the latest checkpoint, on the default device.

  Args:
    workdir: the run's work directory.
    step: checkpoint to load (default: the latest).

  Returns:
    ``(model, config)``: the model in eval mode and the run's config as a
    dict (as in ``config.json``).

  Raises:
    FileNotFoundError: no ``config.json`` or no checkpoint in ``workdir``.

  Example:
    >>> model, config = restore_model('runs/mnist_cnn/adamw')  # doctest: +SKIP
    >>> config['model'], model(images).shape  # doctest: +SKIP
    ('invertible_cnn', (8, 10))
  """
  config = load_config(workdir)
  abstract_model = nnx.eval_shape(lambda: modeling.model_from_config(config))
  graphdef, params, model_state = nnx.split(abstract_model, nnx.Param, ...)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  place = lambda tree: jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), tree)
  manager = checkpoint_manager(workdir, max_to_keep=None)
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'no checkpoint in {Path(workdir) / CHECKPOINT_DIR}')
  items = {'params': params, 'model_state': _keys_to_data(model_state)}
  restored = manager.restore(step, args=ocp.args.Composite(
      **{name: ocp.args.StandardRestore(place(item)) for name, item in items.items()
         if jax.tree.leaves(item)}))
  manager.close()
  model = nnx.merge(graphdef, restored['params'],
                    _data_to_keys(restored.get('model_state', model_state), model_state))
  model.eval()
  return model, configs.to_dict(config)
