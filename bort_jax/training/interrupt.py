"""SIGINT and SIGTERM as requests to checkpoint and stop between steps.

:class:`InterruptWatcher` installs handlers that only record the signal;
the loop asks :meth:`InterruptWatcher.should_stop` after each step, saves a
checkpoint and raises :class:`~bort_jax.training.errors.Interrupted`. A
second signal while that happens gets the default behaviour (a second
Ctrl-C ends the process at once).

Several processes (multi-host) must stop at the same step, since saving is
collective. There the watcher also asks orbax
(``CheckpointManager.reached_preemption``, JAX's preemption sync point:
the cluster's SIGTERM notice reaches every host, which agree on the step to
save at); JAX's preemption service handles SIGTERM itself then, so only
SIGINT gets a handler, and a SIGINT seen by one process is agreed on by
all with one ``process_allgather`` of a flag every ``agree_every`` steps.

Handlers can only be installed from the main thread; elsewhere the watcher
does nothing (signals keep their behaviour).

Example:
  >>> from bort_jax.training.errors import Interrupted
  >>> from bort_jax.training.interrupt import InterruptWatcher
  >>> with InterruptWatcher() as watcher:
  ...   for step in range(1, 4):
  ...     pass  # one training step
  ...     if watcher.should_stop(step):  # after a SIGINT or SIGTERM
  ...       raise Interrupted(step, watcher.signal_number)  # once saved
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Self

import jax
import numpy as np
from jax.experimental import multihost_utils


class InterruptWatcher:
  """Records SIGINT/SIGTERM; tells the loop when to checkpoint and stop.

  Args:
    manager: an orbax ``CheckpointManager`` (for ``reached_preemption``
      under several processes), or ``None``.
    agree_every: under several processes, the steps between agreements on
      a SIGINT (one small collective each).
    enabled: install the handlers (``False``: never stop).
  """

  def __init__(
      self, manager: Any = None, *, agree_every: int = 10, enabled: bool = True
  ):
    self.manager = manager
    self.agree_every = max(int(agree_every), 1)
    self.signal_number: int | None = None
    self._enabled = enabled
    self._previous: dict[int, Any] = {}
    self._multiprocess = jax.process_count() > 1

  def _handle(self, signal_number, frame) -> None:
    del frame  # unused
    self.signal_number = signal_number
    # A second signal: default behaviour (even under an outer watcher).
    for number in self._previous:
      signal.signal(
          number,
          signal.default_int_handler
          if number == signal.SIGINT
          else signal.SIG_DFL,
      )

  def __enter__(self) -> Self:
    if self._enabled and threading.current_thread() is threading.main_thread():
      numbers = (
          [signal.SIGINT]
          if self._multiprocess
          else [signal.SIGINT, signal.SIGTERM]
      )
      for number in numbers:
        self._previous[number] = signal.signal(number, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    for number, handler in self._previous.items():
      signal.signal(number, handler)
    self._previous.clear()

  def should_stop(self, step: int) -> bool:
    """Whether to checkpoint and stop after ``step`` (all processes agree)."""
    if not self._multiprocess:
      return self.signal_number is not None
    if self.manager is not None and self.manager.reached_preemption(step):
      self.signal_number = self.signal_number or signal.SIGTERM
      return True
    if step % self.agree_every:
      return False
    flags = multihost_utils.process_allgather(
        np.array(self.signal_number is not None)
    )
    if np.any(flags):
      self.signal_number = self.signal_number or signal.SIGINT
      return True
    return False


__all__ = ['InterruptWatcher']
