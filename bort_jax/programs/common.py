"""What the programs share: MNIST preparation, tfds and log output, errors.

Each program (``bort-train``, ``bort-prepare-mnist``, ``bort-explain``)
imports this module, never another program's.

* :data:`IDX_DIR_ENV` and :func:`ensure_mnist_prepared`: MNIST built from
  its four IDX files when a tfds data dir lacks it;
* :func:`quiet_tfds_off_terminal` and :func:`report_library_warnings`: the
  process-wide output settings a program (not the library) owns;
* :func:`report_error`: an error as one ``PROGRAM: error: MESSAGE`` line
  and the exit status it ends with.
"""

from __future__ import annotations

import logging
import os
import sys

import jax
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils

from bort_jax import data
from bort_jax.data import mnist_idx
from bort_jax.training import errors

#: The environment variable naming the folder of the IDX files.
IDX_DIR_ENV = 'BORT_MNIST_IDX_DIR'


def quiet_tfds_off_terminal() -> None:
  """Turns tfds' progress bars off when stderr is not a terminal.

  Off a terminal they write one line per update into the log. The switch is
  global to the process, so only programs (which own the process) call it;
  the library leaves tfds' setting as the caller has it.
  """
  if not sys.stderr.isatty():
    tfds.disable_progress_bar()


def ensure_mnist_prepared(data_dir: str | None, idx_dir: str | None) -> None:
  """Prepares MNIST from IDX files if missing (process 0; the others wait).

  Args:
    data_dir: the tfds data dir (``None``: ``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets``).
    idx_dir: the folder of the four IDX files (``None``: none).

  Raises:
    errors.ConfigError: the data set there exists but cannot be read.
    OSError, ValueError, data.DatasetNotFoundError: with messages of their
      own (no IDX files, damaged ones...).
  """
  if jax.process_index() == 0:
    folder = data.resolve_data_dir(data_dir)
    try:
      mnist_idx.ensure_mnist(folder, idx_dir)
    except (errors.BortError, OSError, ValueError, data.DatasetNotFoundError):
      raise  # messages of their own
    except Exception as error:  # noqa: BLE001  # pylint: disable=broad-exception-caught
      # tfds reading a damaged data set (e.g. a dataset_info.json that is
      # not JSON raises protobuf's ParseError).
      first = (str(error).strip().splitlines() or [''])[0]
      raise errors.ConfigError(
          f'the mnist data in {folder} cannot be read: '
          f'{type(error).__name__}: {first}'
      ) from None
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('bort-train: mnist prepared')


class _NoOrbaxErrors(logging.Filter):
  """Drops orbax's error logs (tracebacks of its save threads): the loop
  reports a failed save as one ``error:`` line naming the folder."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (
        record.levelno >= logging.ERROR
        and f'{os.sep}orbax{os.sep}' in (record.pathname or '')
    )


class _ProgramFormatter(logging.Formatter):
  """``PROGRAM: LEVEL: MESSAGE``."""

  def __init__(self, program: str):
    super().__init__()
    self.program = program

  def format(self, record: logging.LogRecord) -> str:
    return f'{self.program}: {record.levelname.lower()}: {record.getMessage()}'


def report_library_warnings(program: str) -> None:
  """Prints the library's warnings on stderr as ``PROGRAM: warning: ...``.

  The ``bort_jax`` logger (corrupt checkpoints skipped, metrics records
  dropped) gets one such handler, replacing one set up before, and stops
  propagating; orbax's error logs are dropped.

  Args:
    program: the program's name, the prefix of each line.
  """
  logger = logging.getLogger('bort_jax')
  for handler in [
      h for h in logger.handlers if getattr(h, '_bort_train', False)
  ]:
    logger.removeHandler(handler)
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(_ProgramFormatter(program))
  handler._bort_train = True  # pylint: disable=protected-access
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  logger.propagate = False
  absl_logger = logging.getLogger('absl')
  if not any(isinstance(f, _NoOrbaxErrors) for f in absl_logger.filters):
    absl_logger.addFilter(_NoOrbaxErrors())


def report_error(program: str, error: Exception, exit_code: int) -> int:
  """Prints ``error`` as one line on stderr; returns the exit status.

  Args:
    program: the program's name, the prefix of the line.
    error: the error; a :class:`~bort_jax.training.errors.BortError` brings
      its own exit status, and an
      :class:`~bort_jax.training.errors.Interrupted` is no ``error:``.
    exit_code: the exit status of any other error.

  Returns:
    The exit status.
  """
  if isinstance(error, errors.Interrupted):
    print(f'{program}: {error}', file=sys.stderr)
  else:
    print(f'{program}: error: {error}', file=sys.stderr)
  if isinstance(error, errors.BortError):
    return error.exit_code
  return exit_code
