"""The input iterator's state in the checkpoint: a run killed mid-epoch
resumes at the exact next batch, with or without Grain worker processes,
and with another number of them."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flax import nnx

from testing import TINY_ARGS, array_source, assert_trees_equal

from bort_jax import configs, data
from bort_jax.programs import train as train_program
from bort_jax.training import checkpoint, input_pipeline

pytestmark = pytest.mark.expensive

# The tiny run with a checkpoint every 4 steps, so
# that a kill after step 6 resumes mid-epoch from step 4.
ARGS = [*TINY_ARGS, '--set', 'checkpoint_every_steps=4']
TIMEOUT = 300


def _params(workdir):
  model, _ = checkpoint.restore_model(workdir)
  return nnx.state(model, nnx.Param)


def _run(args, capsys):
  code = train_program.main([str(a) for a in args])
  return code, capsys.readouterr().err


def _live_members(group):
  """Pids of the processes of ``group`` still running (zombies are not)."""
  if not os.path.isdir('/proc'):
    try:
      os.killpg(group, 0)
    except ProcessLookupError:
      return []
    return [group]
  pids = []
  for entry in os.scandir('/proc'):
    if not entry.name.isdigit():
      continue
    try:
      stat = Path(entry.path, 'stat').read_text()
    except OSError:  # ended meanwhile
      continue
    state, _, pgrp = stat.rpartition(')')[2].split()[:3]
    if int(pgrp) == group and state != 'Z':
      pids.append(int(entry.name))
  return pids


def _run_killed(args, tmp_path, env):
  """Runs the trainer until crash_worker.py SIGKILLs it after step 6, then
  checks that its Grain workers die with it.

  Its own session and process group, output to files: a leftover process
  can hold no pipe of ours open, and the group is killed in any case.
  """
  err = tmp_path / 'killed.err'
  with open(tmp_path / 'killed.out', 'w') as out, open(err, 'w') as errors:
    killed = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name('crash_worker.py')),
            'after_step',
            '6',
            *map(str, args),
        ],
        env=env,
        stdout=out,
        stderr=errors,
        start_new_session=True,
    )
  try:
    try:
      code = killed.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
      pytest.fail(f'running after {TIMEOUT} s:\n{err.read_text()[-5000:]}')
    assert code == -signal.SIGKILL, err.read_text()[-5000:]
    deadline = time.monotonic() + 60
    while (left := _live_members(killed.pid)) and time.monotonic() < deadline:
      time.sleep(0.2)
    assert not left, f'processes {left} outlived the killed trainer'
  finally:
    try:
      os.killpg(killed.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
    killed.wait(timeout=60)


@pytest.fixture(scope='module')
def never_stopped(tmp_path_factory, mnist_data_dir):
  workdir = tmp_path_factory.mktemp('never_stopped')
  code = train_program.main(
      [*ARGS, '--data-dir', mnist_data_dir, '--workdir', str(workdir)]
  )
  assert code == 0
  return _params(workdir)


@pytest.mark.parametrize('workers, resume_workers', [(2, 2), (2, 0)])
def test_kill9_mid_epoch_then_resume_equals_the_run_never_stopped(
    workers,
    resume_workers,
    tmp_path,
    mnist_data_dir,
    subprocess_env,
    never_stopped,
    capsys,
):
  workdir = tmp_path / 'run'
  args = [*ARGS, '--data-dir', mnist_data_dir, '--workdir', workdir]
  _run_killed(
      [*args, '--set', f'data_workers={workers}'], tmp_path, subprocess_env
  )
  saved = json.loads(
      (
          workdir / 'checkpoints' / '4' / 'data' / 'process_0-of-1.json'
      ).read_text()
  )
  assert data.iterator_position(saved['iterator']) + saved['start'] == 4
  code, err = _run(
      [*args, '--resume', '--set', f'data_workers={resume_workers}'], capsys
  )
  assert code == 0, err
  assert_trees_equal(never_stopped, _params(workdir))


def _as_if_saved_by_two_processes(workdir):
  """Renames the checkpoints' records and input states as two processes
  name theirs (one file each)."""
  for record in (workdir / checkpoint.RECORD_DIR).glob('*.json'):
    step = record.name.split('.')[0]
    for process in range(2):
      (record.parent / f'{step}.process{process}.json').write_bytes(
          record.read_bytes()
      )
    record.unlink()
  for state in (workdir / 'checkpoints').glob('*/data/process_0-of-1.json'):
    for process in range(2):
      state.with_name(f'process_{process}-of-2.json').write_bytes(
          state.read_bytes()
      )
    state.unlink()


def test_resume_on_another_process_count(
    tmp_path, mnist_data_dir, never_stopped, capsys
):
  """Checkpoints of two processes, resumed by one: a clear refusal, then,
  allowed, the input restarts at the checkpoint's step with the same
  batches."""
  workdir = tmp_path / 'run'
  args = [*ARGS, '--data-dir', mnist_data_dir, '--workdir', workdir]
  code, err = _run([*args, '--max-steps', '6'], capsys)
  assert code == 0, err
  _as_if_saved_by_two_processes(workdir)
  code, err = _run([*args, '--resume'], capsys)
  assert code != 0
  assert 'checkpoint 6 was saved by 2 process(es), this run has 1' in err
  code, err = _run([*args, '--resume', '--allow-unverified-checkpoint'], capsys)
  assert code == 0, err
  assert_trees_equal(never_stopped, _params(workdir))


def test_a_damaged_iterator_state_makes_its_checkpoint_corrupt(
    tmp_path, mnist_data_dir, capsys
):
  workdir = tmp_path / 'run'
  args = [*ARGS, '--data-dir', mnist_data_dir, '--workdir', workdir]
  code, err = _run([*args, '--max-steps', '9'], capsys)
  assert code == 0, err
  state_file = workdir / 'checkpoints' / '9' / 'data' / 'process_0-of-1.json'
  state = json.loads(state_file.read_text())
  state['iterator']['next_index'] += 1
  state_file.write_text(json.dumps(state))
  code, err = _run([*args, '--resume', '--max-steps', '9'], capsys)
  assert code == 0, err
  assert 'checkpoint 9 is corrupt: ValueError: checksum mismatch in data' in err


def _config(**changes):
  config = configs.get_config('mnist_mlp')
  return configs.replace(
      config, batch_size=4, epochs=3, augment=False, **changes
  )


@pytest.fixture(scope='module')
def tiny_source():
  return array_source('mnist', 10)


def _labels(batches, count):
  return [batch['label'].tolist() for batch in batches.take(count)]


def test_train_batches_resume_from_their_saved_state(tiny_source):
  config = _config()
  whole = input_pipeline.TrainBatches(config, tiny_source)
  expected = _labels(whole, 6)
  first = input_pipeline.TrainBatches(config, tiny_source)
  assert _labels(first, 3) == expected[:3]
  saved = json.loads(json.dumps(first.state()))  # as the checkpoint holds it
  resumed = input_pipeline.TrainBatches.resume(
      config, tiny_source, step=3, saved=saved
  )
  assert _labels(resumed, 3) == expected[3:]
  rebuilt = input_pipeline.TrainBatches.resume(
      config, tiny_source, step=3, saved=None
  )
  assert _labels(rebuilt, 3) == expected[3:]


def test_train_batches_refuse_a_state_at_another_step(tiny_source):
  config = _config()
  batches = input_pipeline.TrainBatches(config, tiny_source)
  _labels(batches, 2)
  with pytest.raises(ValueError, match='at step 2, the train state at step 3'):
    input_pipeline.TrainBatches.resume(
        config, tiny_source, step=3, saved=batches.state()
    )


def test_config_refuses_negative_workers():
  with pytest.raises(ValueError, match='data_workers must be non-negative'):
    configs.validate(_config(data_workers=-1))
