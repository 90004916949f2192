"""``bort-train``, killed with SIGKILL at a chosen point of the run.

Run by ``test_faults.py``::

  python crash_worker.py POINT N BORT_TRAIN_ARGUMENTS...

POINT is one of:

* ``after_step``: once step N and all that follows it (its record, its
  checkpoint, an epoch's evaluation) is done, as the batch of step N + 1 is
  read.
* ``in_eval``: as the N-th evaluation (1: the first epoch's) starts.

Every checkpoint is waited for before the run goes on, so which checkpoints
exist at the kill does not depend on the speed of the machine. The process
then dies by SIGKILL: no ``finally`` clause, no flush, the work directory
lock left behind, as when an operator runs ``kill -9``.
"""

import os
import signal
import sys


from bort_jax import data
from bort_jax.programs import train as train_program
from bort_jax.training import checkpoint, input_pipeline, loop


def _kill() -> None:
  sys.stdout.flush()
  sys.stderr.flush()
  os.kill(os.getpid(), signal.SIGKILL)


def main(point: str, n: int, argv: list[str]) -> int:
  save_state = checkpoint.save_state

  def save_and_wait(manager, *args, **kwargs):
    saved = save_state(manager, *args, **kwargs)
    manager.wait_until_finished()
    return saved

  checkpoint.save_state = save_and_wait

  if point == 'after_step':
    take = input_pipeline.TrainBatches.take

    def take_until(self, count):
      for batch in take(self, count):
        state = self.state()
        if state['start'] + data.iterator_position(state['iterator']) == n + 1:
          _kill()  # the batch of step n + 1 is read
        yield batch

    input_pipeline.TrainBatches.take = take_until
  elif point == 'in_eval':
    evaluate = loop.evaluate
    calls = []

    def evaluate_until(*args, **kwargs):
      calls.append(None)
      if len(calls) == n:
        _kill()
      return evaluate(*args, **kwargs)

    loop.evaluate = evaluate_until
  else:
    raise ValueError(f'unknown point {point!r}')
  return train_program.main(argv)


if __name__ == '__main__':
  sys.exit(main(sys.argv[1], int(sys.argv[2]), sys.argv[3:]))
