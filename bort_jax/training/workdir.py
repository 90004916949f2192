"""A work directory belongs to one run: checks, an owner lock, overwriting.

:func:`check_directory` says at once (before anything is written) why a
path cannot be a run's directory: it is a file, or it cannot be created or
written. :class:`WorkdirLock` makes one process the owner of a work
directory: it holds an exclusive ``fcntl.flock`` on ``WORKDIR/.lock``,
which records the owner's pid, host and start time; a second process fails
at once with a message naming the owner. The kernel releases the lock when
its process dies (even by ``kill -9``), so a lock left by a dead process is
simply taken over. :func:`previous_run` describes what an earlier run left
(config, checkpoints, metrics) and :func:`remove_run` deletes exactly
those files (``--overwrite``).

Example:
  >>> import tempfile
  >>> from bort_jax.training.workdir import WorkdirLock
  >>> with tempfile.TemporaryDirectory() as workdir:
  ...   with WorkdirLock(workdir):
  ...     pass  # train; another process locking workdir fails meanwhile
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, NamedTuple, Self

from bort_jax.training.errors import WorkdirError

LOCK_FILE = '.lock'
#: What a run writes in its work directory (``--overwrite`` removes these).
RUN_FILES = ('config.json', 'metrics.jsonl')
RUN_DIRS = ('checkpoints', 'checkpoint_records', 'corrupt_checkpoints')
#: Files a run writes under varying names: TensorBoard event files.
RUN_FILE_PATTERNS = ('events.out.tfevents.*',)


def _describe_os_error(error: OSError) -> str:
  return error.strerror or str(error)


def check_directory(
    path: str | os.PathLike[str], *, what: str = 'work directory'
) -> Path:
  """Creates ``path`` if needed and checks that files can be written in it.

  Args:
    path: the directory.
    what: how messages call it (``'work directory'``, ``'--out folder'``).

  Returns:
    ``path`` as a ``Path``.

  Raises:
    WorkdirError: ``path`` is a file, lies under a file, or cannot be
      created or written (read-only file system, permissions); the message
      names the path and the reason.

  Example:
    >>> import pathlib, tempfile
    >>> from bort_jax.training.workdir import check_directory
    >>> with tempfile.TemporaryDirectory() as folder:
    ...   notes = pathlib.Path(folder, 'notes.txt')
    ...   _ = notes.write_text('')
    ...   check_directory(notes)
    Traceback (most recent call last):
    ...
    bort_jax.training.errors.WorkdirError: work directory .../notes.txt is a file, not a directory
  """
  path = Path(path)
  if path.exists() and not path.is_dir():
    raise WorkdirError(f'{what} {path} is a file, not a directory')
  try:
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=path, prefix='.write_check'):
      pass
  except OSError as error:
    if isinstance(error, (NotADirectoryError, FileExistsError)):
      reason = 'a part of the path is a file'
    else:
      reason = _describe_os_error(error)
    raise WorkdirError(f'cannot use {path} as the {what}: {reason}') from None
  return path


class Owner(NamedTuple):
  """Who holds a work directory's lock (from its lock file)."""

  pid: int | None
  host: str
  since: str

  def __str__(self) -> str:
    return f'pid {self.pid} on {self.host} (since {self.since})'


def read_owner(workdir: str | os.PathLike[str]) -> Owner | None:
  """The owner recorded in ``WORKDIR/.lock`` (``None`` if unreadable)."""
  try:
    record = json.loads((Path(workdir) / LOCK_FILE).read_text())
    return Owner(
        record.get('pid'), str(record.get('host')), str(record.get('since'))
    )
  except (OSError, ValueError, AttributeError):
    return None


class WorkdirLock:
  """An exclusive, non-blocking owner lock on a work directory.

  Use as a context manager; :meth:`acquire` and :meth:`release` also work.
  Only one :class:`WorkdirLock` per directory can be held at a time, across
  processes (and within one).

  Args:
    workdir: the work directory (must exist).
  """

  def __init__(self, workdir: str | os.PathLike[str]):
    self.path = Path(workdir) / LOCK_FILE
    self._file = None

  def acquire(self) -> WorkdirLock:
    """Takes the lock and records this process as the owner.

    Raises:
      WorkdirError: another process holds it; the message names its pid
        and host.
    """
    try:
      handle = open(self.path, 'a+')  # noqa: SIM115 - held while owning
    except OSError as error:
      raise WorkdirError(
          f'cannot create the lock file {self.path}: '
          f'{_describe_os_error(error)}'
      ) from None
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
      handle.close()
      if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        raise WorkdirError(f'cannot lock {self.path}: {error}') from None
      owner = read_owner(self.path.parent) or 'another process'
      raise WorkdirError(
          f'work directory {self.path.parent} is in use by {owner}; wait for '
          'that run to end, stop it, or use another --workdir'
      ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(
        json.dumps(
            {
                'pid': os.getpid(),
                'host': socket.gethostname(),
                'since': datetime.datetime.now(datetime.UTC).isoformat(
                    timespec='seconds'
                ),
            }
        )
        + '\n'
    )
    handle.flush()
    self._file = handle
    return self

  def release(self) -> None:
    """Releases the lock (the file stays; its record is outdated then)."""
    if self._file is not None:
      fcntl.flock(self._file, fcntl.LOCK_UN)
      self._file.close()
      self._file = None

  def __enter__(self) -> Self:
    return self.acquire()

  def __exit__(self, *exc_info) -> None:
    self.release()


def previous_run(workdir: str | os.PathLike[str]) -> dict[str, Any]:
  """What an earlier run left in ``workdir``: ``{}`` if nothing.

  Returns:
    A dict with the keys present among ``'config'`` (the path of
    ``config.json``), ``'checkpoints'`` (number of step folders) and
    ``'metrics'`` (number of lines of ``metrics.jsonl``).
  """
  workdir = Path(workdir)
  found = {}
  if (workdir / 'config.json').exists():
    found['config'] = workdir / 'config.json'
  checkpoints = workdir / 'checkpoints'
  if checkpoints.is_dir():
    count = sum(1 for p in checkpoints.iterdir() if p.name.isdigit())
    if count:
      found['checkpoints'] = count
  metrics = workdir / 'metrics.jsonl'
  if metrics.is_file() and metrics.stat().st_size:
    with metrics.open('rb') as f:
      found['metrics'] = sum(1 for _ in f)
  return found


def describe_run(found: dict[str, Any]) -> str:
  """``previous_run``'s answer in words (``'config.json, 2 checkpoint(s)'``)."""
  parts = []
  if 'config' in found:
    parts.append('config.json')
  if 'checkpoints' in found:
    parts.append(f"{found['checkpoints']} checkpoint(s)")
  if 'metrics' in found:
    parts.append(f"{found['metrics']} metrics record(s)")
  return ', '.join(parts)


def remove_run(workdir: str | os.PathLike[str]) -> None:
  """Deletes what a run writes (:data:`RUN_FILES`, :data:`RUN_DIRS`,
  :data:`RUN_FILE_PATTERNS`) and nothing else."""
  workdir = Path(workdir)
  for name in RUN_FILES:
    (workdir / name).unlink(missing_ok=True)
  for pattern in RUN_FILE_PATTERNS:
    for path in workdir.glob(pattern):
      path.unlink(missing_ok=True)
  for name in RUN_DIRS:
    if (workdir / name).exists():
      shutil.rmtree(workdir / name)


def check_output_dir(path: str | os.PathLike[str]) -> Path:
  """Checks an output folder before a long computation writes into it.

  Creates it if needed and writes (then removes) a probe file, so an
  unwritable folder fails in a second, not after the analysis.

  Raises:
    WorkdirError: the path is a file or cannot be written; the message
      says why.

  Example:
    >>> import tempfile
    >>> from bort_jax.training.workdir import check_output_dir
    >>> with tempfile.TemporaryDirectory() as folder:
    ...   check_output_dir(f'{folder}/explain_out').is_dir()
    True
  """
  return check_directory(path, what='output folder')


__all__ = [
    'LOCK_FILE',
    'Owner',
    'WorkdirLock',
    'check_directory',
    'check_output_dir',
    'describe_run',
    'previous_run',
    'read_owner',
    'remove_run',
]
