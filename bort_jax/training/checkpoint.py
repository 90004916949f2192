"""Orbax checkpoints of the train state, the run's ``config.json``, and
:func:`restore_model` to get a trained model back.

A work directory holds::

  WORKDIR/config.json          the config (bort_jax.configs; process 0 writes it)
  WORKDIR/checkpoints/<step>/  params, model_state, opt_state, progress,
                               loop (the training loop's own state: the
                               running sums of the record in progress) and
                               data (the input iterator's state, Grain's
                               process_<i>-of-<n>.json)
  WORKDIR/checkpoint_records/<step>.json
                               the SHA-256 of every saved array
  WORKDIR/metrics.jsonl        see bort_jax.training.loop

RNG keys are stored as their raw ``uint32`` key data and wrapped again on
restore, so a resumed run continues with exactly the same random numbers.

Checkpoints are verified on restore. orbax-checkpoint 0.12 checks the
structure of what it reads but not the values (there is no checksum in
its format), so :func:`save_state` also records ``sha256(dtype, shape,
bytes)`` of each array this process saves (each shard it owns, for arrays
spread over processes) in ``checkpoint_records/<step>.json``, from the
same arrays orbax writes. :func:`restore_verified` restores the newest
checkpoint and compares; a checkpoint that fails to restore (truncated or
deleted files) or whose arrays differ from their record is reported and
the next older one is tried. Once a good one is found, the bad newer ones
are moved to ``WORKDIR/corrupt_checkpoints/`` (kept for inspection, out of
the way of the resumed run's saves); if none is good, nothing is moved
and :class:`~bort_jax.training.errors.CheckpointError` says why each
failed. A checkpoint without a record cannot be verified: it counts as
unusable unless ``allow_unverified=True`` (``--allow-unverified-checkpoint``),
which restores it with a warning. A checkpoint folder holding anything but
folders and regular files (a FIFO would block the reader forever) is
corrupt.

Example:
  >>> model, config = restore_model('runs/mnist_cnn/bort_adamw')  # doctest: +SKIP
  >>> logits = model(images)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
import grain.checkpoint
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils

from bort_jax import configs
from bort_jax.training import modeling, parallel
from bort_jax.training.errors import CheckpointError, ConfigError
from bort_jax.training.step import TrainState

CONFIG_FILE = 'config.json'
CHECKPOINT_DIR = 'checkpoints'
RECORD_DIR = 'checkpoint_records'
CORRUPT_DIR = 'corrupt_checkpoints'
STATE_ITEMS = ('params', 'model_state', 'opt_state', 'progress')
LOOP_ITEM = 'loop'
DATA_ITEM = 'data'

PyTree = Any

logger = logging.getLogger('bort_jax')


def save_config(
    workdir: str | os.PathLike[str], config: ml_collections.ConfigDict
) -> Path:
  """Writes ``WORKDIR/config.json`` (on process 0) and returns its path."""
  path = Path(workdir) / CONFIG_FILE
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(
        path, json.dumps(configs.to_dict(config), indent=2) + '\n'
    )
  return path


def _write_atomically(path: Path, text: str) -> None:
  """Writes ``text`` to a temporary file, then renames it to ``path``."""
  temporary = path.with_name(f'.{path.name}.tmp')
  with temporary.open('w') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(temporary, path)


def load_config(workdir: str | os.PathLike[str]) -> ml_collections.ConfigDict:
  """Reads ``WORKDIR/config.json`` back into a validated config.

  Raises:
    FileNotFoundError: no ``config.json`` (not a ``bort-train`` work
      directory).
    ConfigError: not JSON (e.g. truncated), a field unknown to
      :mod:`bort_jax.configs`, or a bad value; the message names the file.
  """
  path = Path(workdir) / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(
        f'no {CONFIG_FILE} in {workdir}: not a bort-train work directory'
    )
  try:
    values = json.loads(path.read_text())
  except (ValueError, UnicodeDecodeError) as error:
    raise ConfigError(
        f'{path} is not valid JSON (truncated or edited?): {error}'
    ) from None
  if not isinstance(values, dict):
    raise ConfigError(f'{path} does not hold a JSON object')
  try:
    return configs.from_dict(values)
  except ValueError as error:
    raise ConfigError(f'{path}: {error}') from None


def checkpoint_manager(
    workdir: str | os.PathLike[str], *, max_to_keep: int | None = 2
) -> ocp.CheckpointManager:
  """An orbax ``CheckpointManager`` over ``WORKDIR/checkpoints``."""
  directory = (Path(workdir) / CHECKPOINT_DIR).absolute()
  return ocp.CheckpointManager(
      directory,
      options=ocp.CheckpointManagerOptions(
          max_to_keep=max_to_keep, create=True
      ),
  )


def _not_a_folder(path: Path) -> CheckpointError | None:
  if (path.exists() or path.is_symlink()) and not path.is_dir():
    return CheckpointError(
        f'{path} is not a folder: checkpoints cannot be written there; '
        'move it away'
    )
  return None


def check_folders(workdir: str | os.PathLike[str]) -> None:
  """Raises :class:`CheckpointError` if ``WORKDIR/checkpoints``,
  ``WORKDIR/checkpoint_records`` or a checkpoint ``checkpoints/<step>``
  exists and is not a folder (a save there would fail after the training,
  or block forever on a FIFO)."""
  folder = Path(workdir) / CHECKPOINT_DIR
  paths = [folder, Path(workdir) / RECORD_DIR]
  if folder.is_dir():
    paths += [p for p in folder.iterdir() if p.name.isdigit()]
  for path in paths:
    error = _not_a_folder(path)
    if error:
      raise error


def finish(manager: ocp.CheckpointManager) -> None:
  """Waits for the manager's pending saves, then closes it.

  Raises:
    CheckpointError: a save failed in orbax's background thread; the
      message names the checkpoint folder and the error.
  """
  try:
    manager.wait_until_finished()
  except Exception as error:  # noqa: BLE001  # pylint: disable=broad-exception-caught
    try:
      manager.close()
    except Exception:  # noqa: BLE001, S110  # pylint: disable=broad-exception-caught
      pass  # the same failure, reported below
    raise CheckpointError(
        f'cannot write a checkpoint in {manager.directory}: '
        f'{_describe(error)}'
    ) from error
  manager.close()


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
    impl = (
        None if isinstance(t, jax.ShapeDtypeStruct) else jax.random.key_impl(t)
    )
    return jax.random.wrap_key_data(x, impl=impl)

  return jax.tree.map(convert, tree, template)


def _items(state: TrainState) -> dict[str, PyTree]:
  return {
      'params': state.params,
      'model_state': _keys_to_data(state.model_state),
      'opt_state': state.opt_state,
      'progress': {'step': state.step, 'rng': _keys_to_data(state.rng)},
  }


def _leaf_name(path) -> str:
  return '/'.join(
      str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k))))
      for k in path
  )


def _sha256(array: np.ndarray) -> str:
  array = np.ascontiguousarray(array)
  digest = hashlib.sha256(f'{array.dtype.str}{array.shape}'.encode())
  digest.update(array.reshape(-1).view(np.uint8).data)
  return digest.hexdigest()


def array_digests(items: dict[str, PyTree]) -> dict[str, str]:
  """``{'item/leaf/path': sha256}`` of the arrays this process holds.

  A whole array's digest when this process holds all of it; otherwise one
  per shard it owns (first replica), named ``path@<index>``.
  """
  digests = {}
  for name, item in items.items():
    for path, leaf in jax.tree_util.tree_leaves_with_path(item):
      key = f'{name}/{_leaf_name(path)}'
      if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
        digests[key] = _sha256(np.asarray(jax.device_get(leaf)))
        continue
      for shard in leaf.addressable_shards:
        if shard.replica_id == 0:
          index = ','.join(f'{s.start}:{s.stop}' for s in shard.index)
          digests[f'{key}@{index}'] = _sha256(np.asarray(shard.data))
  return digests


def _record_path(manager: ocp.CheckpointManager, step: int) -> Path:
  suffix = '' if jax.process_count() == 1 else f'.process{jax.process_index()}'
  return Path(manager.directory).parent / RECORD_DIR / f'{step}{suffix}.json'


def read_record(
    manager: ocp.CheckpointManager, step: int
) -> dict[str, Any] | None:
  """The record saved with checkpoint ``step`` (``None`` if there is none).

  Raises:
    ValueError: the record exists but is not JSON.
  """
  path = _record_path(manager, step)
  if not path.is_file():
    return None
  try:
    return json.loads(path.read_text())
  except ValueError as error:
    raise ValueError(f'its record {path} is not JSON: {error}') from None


def _prune_records(manager: ocp.CheckpointManager) -> None:
  """Removes the records of checkpoints orbax no longer keeps."""
  folder = Path(manager.directory).parent / RECORD_DIR
  if not folder.is_dir():
    return
  kept = set(manager.all_steps())
  oldest = min(kept, default=None)
  for path in folder.glob('*.json'):
    step = path.name.split('.', 1)[0]
    if (
        step.isdigit()
        and int(step) not in kept
        and (oldest is None or int(step) < oldest)
    ):
      path.unlink(missing_ok=True)


def save_state(
    manager: ocp.CheckpointManager,
    state: TrainState,
    *,
    step: int | None = None,
    force: bool = False,
    extra: dict[str, Any] | None = None,
    loop_state: dict[str, Any] | None = None,
    data_state: dict[str, Any] | None = None,
) -> bool:
  """Saves ``state`` as checkpoint ``step`` (default: ``state.step``).

  Every process must call it (orbax writes the shards each one owns).
  Asynchronous: call ``manager.wait_until_finished()`` before exiting. The
  record (array digests and ``extra``) is written first, atomically; orbax
  lists the checkpoint only once it is complete, so a listed checkpoint
  always has its record.

  Args:
    manager: from :func:`checkpoint_manager`.
    state: the train state (one replica).
    step: the checkpoint's number (default: ``state.step``).
    force: save even if the manager's policy would not.
    extra: JSON-ready values stored in the record;
      :func:`restore_verified` returns them.
    loop_state: arrays of the training loop (the running sums of the record
      in progress), saved as the checkpoint's ``loop`` item and verified
      like the state.
    data_state: the input iterator's state (JSON-ready, e.g. a Grain
      iterator's ``get_state()``), saved as the ``data`` item with Grain's
      Orbax handler (a file per process) and verified by its digest.

  Returns:
    Whether a checkpoint was saved.

  Raises:
    CheckpointError: the record or the checkpoint cannot be written (or an
      earlier asynchronous save failed); the message names the path.
  """
  step = int(jax.device_get(state.step)) if step is None else step
  try:
    return _save_state(
        manager, state, step, force, extra, loop_state, data_state
    )
  except CheckpointError:
    raise
  except Exception as error:  # noqa: BLE001  # pylint: disable=broad-exception-caught
    # OSError from the record, and orbax's many exception types.
    raise CheckpointError(
        f'cannot write checkpoints in {manager.directory} (saving step '
        f'{step}): {_describe(error)}'
    ) from error


class _IteratorStateText:
  """A frozen iterator state for Grain's Orbax handler, as JSON text.

  The handler saves ``get_state()`` and restores through ``set_state()``;
  holding the text (not the live iterator) saves the state of the step
  being checkpointed even when Orbax writes in the background, and lets
  the restored text be verified before any iterator sees it.
  """

  def __init__(self, text: str | None = None):
    self.text = text

  def get_state(self) -> bytes:
    return self.text.encode()

  def set_state(self, state: bytes) -> None:
    self.text = state.decode()

  def start_prefetch(self) -> None:
    pass


def _state_text(data_state: Any) -> str:
  return json.dumps(data_state, sort_keys=True, allow_nan=False)


def _text_digest(text: str) -> str:
  return hashlib.sha256(text.encode()).hexdigest()


def _data_file(manager: ocp.CheckpointManager, step: int) -> Path:
  """This process' file of the ``data`` item (Grain's naming)."""
  name = f'process_{jax.process_index()}-of-{jax.process_count()}.json'
  return _step_folder(manager, step) / DATA_ITEM / name


def _save_state(
    manager, state, step, force, extra, loop_state, data_state
) -> bool:
  error = _not_a_folder(_step_folder(manager, step))
  if error:  # orbax would remove it, blocking forever on a FIFO
    raise error
  items = _items(state)
  if loop_state is not None:
    items[LOOP_ITEM] = loop_state
  items = {
      name: item for name, item in items.items() if jax.tree.leaves(item)
  }  # orbax refuses empty items (no BatchNorm...)
  record = {'step': step, 'sha256': array_digests(items), 'extra': extra or {}}
  args = {name: ocp.args.StandardSave(item) for name, item in items.items()}
  if data_state is not None:
    text = _state_text(data_state)
    record['data_sha256'] = _text_digest(text)
    args[DATA_ITEM] = grain.checkpoint.CheckpointSave(_IteratorStateText(text))
  path = _record_path(manager, step)
  path.parent.mkdir(parents=True, exist_ok=True)
  _write_atomically(path, json.dumps(record, allow_nan=False) + '\n')
  saved = manager.save(step, args=ocp.args.Composite(**args), force=force)
  if saved:
    _prune_records(manager)
  elif step not in manager.all_steps():
    path.unlink(missing_ok=True)
  return saved


def _abstract(tree: PyTree) -> PyTree:
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def check_regular_files(folder: str | os.PathLike[str]) -> None:
  """Raises ``ValueError`` naming the first entry under ``folder`` that is
  neither a folder nor a regular file (a FIFO, a socket, a device, a
  dangling link): reading one could block forever or read garbage."""
  folder = Path(folder)
  if not folder.is_dir():
    raise ValueError(f'{folder} is not a folder')
  for root, folders, files in os.walk(folder):
    for name in files + folders:
      path = Path(root) / name
      if not (path.is_dir() or path.is_file()):
        raise ValueError(f'{path} is not a regular file')


def _step_folder(manager: ocp.CheckpointManager, step: int) -> Path:
  return Path(manager.directory) / str(step)


def _restore_items(
    manager: ocp.CheckpointManager,
    template: TrainState,
    step: int,
    loop_template: dict[str, Any] | None,
    data: bool = False,
) -> dict[str, PyTree]:
  """The saved items of checkpoint ``step`` (key data, not keys), ``loop``
  included when ``loop_template`` is given and the checkpoint has one, and
  ``data`` (this process' JSON text) when ``data`` and it has one."""
  check_regular_files(_step_folder(manager, step))
  items = _items(template)
  if loop_template is not None and (
      (_step_folder(manager, step) / LOOP_ITEM).is_dir()
  ):
    items[LOOP_ITEM] = loop_template
  args = {
      name: ocp.args.StandardRestore(_abstract(item))
      for name, item in items.items()
      if jax.tree.leaves(item)
  }
  if data and _data_file(manager, step).is_file():
    args[DATA_ITEM] = grain.checkpoint.CheckpointRestore(_IteratorStateText())
  restored = manager.restore(step, args=ocp.args.Composite(**args))
  items = {
      name: restored[name] if jax.tree.leaves(item) else item
      for name, item in items.items()
  }
  if DATA_ITEM in args:
    items[DATA_ITEM] = restored[DATA_ITEM].text
  return items


def _state_from_items(items: dict[str, PyTree], template: TrainState):
  return TrainState(
      step=items['progress']['step'],
      params=items['params'],
      model_state=_data_to_keys(items['model_state'], template.model_state),
      opt_state=items['opt_state'],
      rng=_data_to_keys(items['progress']['rng'], template.rng),
  )


def restore_state(
    manager: ocp.CheckpointManager,
    template: TrainState,
    *,
    step: int | None = None,
) -> TrainState | None:
  """Restores a checkpoint into the structure, dtypes and shardings of ``template``.

  Not verified: see :func:`restore_verified`.

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
  return _state_from_items(
      _restore_items(manager, template, step, None), template
  )


def verify(
    manager: ocp.CheckpointManager, step: int, items: dict[str, PyTree]
) -> dict[str, Any] | None:
  """Compares restored ``items`` with the digests recorded at save time.

  Args:
    manager: the checkpoint manager.
    step: the checkpoint ``items`` were restored from.
    items: ``{'params': ..., ...}`` as saved (key data, not keys); a subset
      of the saved items is fine.

  Returns:
    The record (``None`` if the checkpoint has none: not verified).

  Raises:
    ValueError: an array differs from its record, or the record is not
      JSON; the message names the first arrays that differ.
  """
  record = read_record(manager, step)
  if record is None:
    return None
  if DATA_ITEM in items and 'data_sha256' in record:
    if _text_digest(items[DATA_ITEM]) != record['data_sha256']:
      raise ValueError(f'checksum mismatch in {DATA_ITEM}')
  items = {k: v for k, v in items.items() if k != DATA_ITEM}
  expected = record.get('sha256', {})
  actual = array_digests({k: v for k, v in items.items() if jax.tree.leaves(v)})
  common = sorted(set(expected) & set(actual))
  if not common:
    raise ValueError('its record names none of the restored arrays')
  bad = [key for key in common if expected[key] != actual[key]]
  if bad:
    more = f' and {len(bad) - 3} more' if len(bad) > 3 else ''
    raise ValueError(f'checksum mismatch in {", ".join(bad[:3])}{more}')
  return record


def _all_agree(ok: bool) -> bool:
  """Whether ``ok`` holds on every process."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.array(ok))))


def _describe(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  first = text[0] if text else ''
  if len(first) > 300:
    first = first[:300] + '...'
  return f'{type(error).__name__}: {first}' if first else type(error).__name__


UNVERIFIED = (
    f'cannot be verified: it has no record in {RECORD_DIR}/ (pass '
    '--allow-unverified-checkpoint, allow_unverified=True, to use it anyway)'
)


class _Unverified(ValueError):
  pass


def _unverified(manager: ocp.CheckpointManager, step: int) -> _Unverified:
  """Why checkpoint ``step`` has no record for this process; names the
  process count that wrote its records where that differs."""
  folder = Path(manager.directory).parent / RECORD_DIR
  saved_by = len(list(folder.glob(f'{step}.process*.json'))) or int(
      (folder / f'{step}.json').is_file()
  )
  if saved_by and saved_by != jax.process_count():
    return _Unverified(
        f'was saved by {saved_by} process(es), this run has '
        f'{jax.process_count()}: its records of checksums are per process, '
        'so it cannot be verified here (pass --allow-unverified-checkpoint, '
        'allow_unverified=True, to resume on this many processes; the input '
        "iterator then restarts at the checkpoint's step, with the same "
        'batches)'
    )
  return _Unverified(UNVERIFIED)


def _restore_first_good(
    manager,
    restore,
    to_items,
    *,
    verb: str = 'resuming from',
    allow_unverified: bool = False,
):
  """Tries the checkpoints newest first; returns ``(step, restored, record,
  bad_steps)`` for the first that restores and verifies.

  ``restore(step)`` restores it; ``to_items(restored)`` gives the saved
  items to verify. A checkpoint without a record counts as bad unless
  ``allow_unverified``.

  Raises:
    CheckpointError: none restores and verifies.
  """
  problems = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      check_regular_files(_step_folder(manager, step))
      if not allow_unverified and read_record(manager, step) is None:
        raise _unverified(manager, step)
      restored = restore(step)
      record = verify(manager, step, to_items(restored))
      ok, problem = True, None
    except Exception as error:  # noqa: BLE001  # pylint: disable=broad-exception-caught
      # orbax/tensorstore report damaged files with many exception types.
      ok = False
      problem = (
          str(error)
          if isinstance(error, _Unverified)
          else f'is corrupt: {_describe(error)}'
      )
    if not _all_agree(ok):
      problem = problem or 'is corrupt on another process'
      problems.append((step, problem))
      continue
    for bad, why in problems:
      logger.warning('checkpoint %d %s; %s %d', bad, why, verb, step)
    if record is None:
      logger.warning(
          'checkpoint %d has no %s record: restored unverified',
          step,
          RECORD_DIR,
      )
    return step, restored, record, [bad for bad, _ in problems]
  raise CheckpointError(
      f'no usable checkpoint in {manager.directory}: '
      + '; '.join(f'checkpoint {bad} {why}' for bad, why in problems)
      + '. Remove the checkpoints folder and start again with --overwrite.'
  )


class Restored(NamedTuple):
  """What :func:`restore_verified` returns.

  Attributes:
    state: the restored train state.
    step: the checkpoint's step.
    extra: the ``extra`` values saved with it (``{}`` if none).
    corrupt: the newer checkpoints found corrupt (moved to
      ``WORKDIR/corrupt_checkpoints/``).
    loop: the checkpoint's ``loop`` item (``None`` if no ``loop_template``
      was given or the checkpoint has none).
    data: this process' input iterator state saved with ``data_state``
      (``None`` if not asked for, or the checkpoint has none for this
      process layout, e.g. it was saved by another number of processes).
  """

  state: TrainState
  step: int
  extra: dict[str, Any]
  corrupt: list[int]
  loop: dict[str, Any] | None = None
  data: Any = None


def restore_verified(
    manager: ocp.CheckpointManager,
    template: TrainState,
    *,
    loop_template: dict[str, Any] | None = None,
    data: bool = False,
    allow_unverified: bool = False,
) -> Restored | None:
  """Restores the newest checkpoint that restores and matches its record.

  Corrupt newer checkpoints are reported (``checkpoint 120 is corrupt:
  ...; resuming from 80``, a warning of the ``bort_jax`` logger) and moved
  to ``WORKDIR/corrupt_checkpoints/<step>`` (process 0), so the resumed run
  can save those steps again.

  Args:
    manager: from :func:`checkpoint_manager`.
    template: as for :func:`restore_state`.
    loop_template: the ``loop_state`` given to :func:`save_state` (arrays
      or shape structs), to restore it too.
    data: restore this process' ``data_state`` too.
    allow_unverified: restore a checkpoint that has no record (with a
      warning) instead of counting it as unusable.

  Returns:
    A :class:`Restored`, or ``None`` if there is no checkpoint.

  Raises:
    CheckpointError: there are checkpoints but none is usable; nothing is
      moved.
  """
  if not manager.all_steps():
    return None
  step, items, record, corrupt = _restore_first_good(
      manager,
      lambda step: _restore_items(manager, template, step, loop_template, data),
      lambda items: items,
      allow_unverified=allow_unverified,
  )
  if corrupt:
    if jax.process_index() == 0:
      directory = Path(manager.directory)
      quarantine = directory.parent / CORRUPT_DIR
      quarantine.mkdir(exist_ok=True)
      for bad in corrupt:
        target = quarantine / str(bad)
        if target.exists():
          shutil.rmtree(target)
        shutil.move(os.fspath(directory / str(bad)), os.fspath(target))
        _record_path(manager, bad).unlink(missing_ok=True)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('bort_jax: corrupt checkpoints moved')
    manager.reload()
  return Restored(
      state=_state_from_items(items, template),
      step=step,
      extra=(record or {}).get('extra', {}),
      corrupt=corrupt,
      loop=items.get(LOOP_ITEM),
      data=json.loads(items[DATA_ITEM]) if DATA_ITEM in items else None,
  )


def restore_model(
    workdir: str | os.PathLike[str],
    *,
    step: int | None = None,
    allow_unverified: bool = False,
) -> tuple[nnx.Module, dict[str, Any]]:
  """Rebuilds a trained model from a ``bort-train`` work directory.

  The model is built from ``WORKDIR/config.json`` (shapes only, nothing is
  initialised) and gets the parameters and model state (BatchNorm
  statistics, RNG state) of the latest checkpoint, on the default device,
  verified against its record: a corrupt latest checkpoint is reported and
  the next older good one used (nothing is moved).

  Args:
    workdir: the run's work directory.
    step: checkpoint to load (default: the latest).
    allow_unverified: use a checkpoint that has no record (with a
      warning) instead of counting it as unusable.

  Returns:
    ``(model, config)``: the model in eval mode and the run's config as a
    dict (as in ``config.json``).

  Raises:
    FileNotFoundError: no ``config.json`` or no checkpoint in ``workdir``.
    CheckpointError: no checkpoint restores and verifies.
    ValueError: ``step`` given and that checkpoint does not verify.

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
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), tree
  )
  manager = checkpoint_manager(workdir, max_to_keep=None)
  items = {
      name: item
      for name, item in {
          'params': params,
          'model_state': _keys_to_data(model_state),
      }.items()
      if jax.tree.leaves(item)
  }

  def restore(at):
    return manager.restore(
        at,
        args=ocp.args.Composite(
            **{
                name: ocp.args.StandardRestore(place(item))
                for name, item in items.items()
            }
        ),
    )

  try:
    if step is not None:
      check_regular_files(_step_folder(manager, step))
      restored = restore(step)
      if verify(manager, step, dict(restored)) is None and not allow_unverified:
        raise ValueError(f'checkpoint {step} {UNVERIFIED}')
    elif not manager.all_steps():
      raise FileNotFoundError(
          f'no checkpoint in {Path(workdir) / CHECKPOINT_DIR}'
      )
    else:
      _, restored, _, _ = _restore_first_good(
          manager,
          restore,
          dict,
          verb='using',
          allow_unverified=allow_unverified,
      )
  finally:
    manager.close()
  model = nnx.merge(
      graphdef,
      restored['params'],
      _data_to_keys(restored.get('model_state', model_state), model_state),
  )
  model.eval()
  return model, configs.to_dict(config)
