"""The errors a training run reports to its user as messages, not tracebacks.

Each is raised with a message that names the problem and, where there is
one, the way out. ``bort-train`` prints ``bort-train: error: <message>``
and exits with :attr:`BortError.exit_code` (2 for a config no run can
use, 1 for a run that cannot go on, 128 + the signal number for an
interrupted one); any other exception is a bug and keeps its traceback.

Example:
  >>> from bort_jax.training.errors import ConfigError
  >>> try:
  ...   raise ConfigError('keep_checkpoints must be at least 1, got 0')
  ... except ValueError as error:  # a ConfigError is a ValueError
  ...   print(error.exit_code, error)
  2 keep_checkpoints must be at least 1, got 0
"""

from __future__ import annotations

import signal


class BortError(Exception):
  """Base class: an error whose message is the whole report.

  Attributes:
    exit_code: the exit status a program should end with.
  """

  exit_code = 1


class ConfigError(BortError, ValueError):
  """A config value (or a program argument) that no run can use."""

  exit_code = 2


class WorkdirError(BortError, OSError):
  """The work directory cannot be used: not a directory, not writable, or
  owned by another running process."""


class PreviousRunError(WorkdirError, FileExistsError):
  """The work directory holds another run, and neither resuming nor
  overwriting it was asked for."""


class NonFiniteError(BortError, FloatingPointError):
  """The loss or the parameters stopped being finite; the run stopped
  without checkpointing the bad state."""


class CheckpointError(BortError):
  """No checkpoint of the work directory could be restored and verified."""


class Interrupted(BortError):
  """The run was stopped by a signal after saving a checkpoint.

  Attributes:
    step: the step the checkpoint holds (``None``: stopped during the
      start-up, before anything was written).
    signal_number: ``signal.SIGINT``, ``signal.SIGTERM``...
    exit_code: ``128 + signal_number``, the shell's convention (130 for
      SIGINT, 143 for SIGTERM).
  """

  def __init__(self, step: int | None, signal_number: int):
    name = signal.Signals(signal_number).name
    if step is None:
      message = f'interrupted ({name}) during the start-up; nothing written'
    else:
      message = (
          f'interrupted ({name}) at step {step}; checkpoint saved; resume '
          'with --resume'
      )
    super().__init__(message)
    self.step = step
    self.signal_number = signal_number
    self.exit_code = 128 + signal_number


__all__ = [
    'BortError',
    'CheckpointError',
    'ConfigError',
    'Interrupted',
    'NonFiniteError',
    'PreviousRunError',
    'WorkdirError',
]
