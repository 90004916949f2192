"""Fault injection: a run never lies.

Each test injects one fault into a tiny MNIST run (a 16-unit MLP, 640
examples, batch 64: 10 steps an epoch) and checks the exit status, the
message, and that nothing is lost or duplicated: ``metrics.jsonl`` parses as
strict JSON, its steps are unique and increasing, and a resumed run ends
bit for bit where an uninterrupted one does, with the same records.

The sections: bad input refused with one line (exit 2; 1 for a work
directory that cannot be used); non-finite figures stop the run;
checkpoints verified, the previous good one used; a stop at any point
(kill -9, --max-steps, a signal) resumed to the same records and
parameters; failed checkpoint writes end the run; one run per work
directory; ``bort-prepare-mnist`` verifies what it reports.

Signals, kill -9 (``crash_worker.py``) and a second process run in
subprocesses; the rest in process. The checks themselves, called directly,
are tested in ``tests/training/test_fault_checks.py``.
"""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from flax import nnx

from testing import TINY, TINY_ARGS, assert_trees_equal, strict_records, train

from bort_jax import configs
from bort_jax.data import mnist_idx
from bort_jax.programs import prepare_mnist as prepare_program
from bort_jax.programs import train as train_program
from bort_jax.training import checkpoint, errors, loop, numerics
from bort_jax.training import workdir as workdir_lib

pytestmark = pytest.mark.expensive

# AdamW at learning rate 1e38: step 1 leaves finite (huge) weights, the loss
# of step 2 overflows.
DIVERGING_ARGS = ['--optimizer', 'adamw', '--learning-rate', '1e38']
TIMEOUT = 300
TIMING = ('step_time', 'elapsed')


def tiny(**changes):
  return configs.replace(configs.get_config('mnist_mlp'), **{**TINY, **changes})


def without_timing(records):
  return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def checkpoint_steps(workdir):
  folder = Path(workdir) / 'checkpoints'
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def tiny_args(data_dir, workdir, *extra):
  """``TINY_ARGS`` reading ``data_dir``, writing ``workdir``, then ``extra``."""
  return [*TINY_ARGS, '--data-dir', data_dir, '--workdir', workdir, *extra]


def resume_args(workdir, data_dir):
  """Resumes the run in ``workdir`` from its own config.json."""
  return [
      '--workdir',
      workdir,
      '--resume',
      '--data-dir',
      data_dir,
      '--no-progress',
  ]


def run_python(program, argv, env):
  """Runs ``python PROGRAM... ARGV...`` in a subprocess to its end (at most
  ``TIMEOUT`` seconds); its output captured as text."""
  return subprocess.run(
      [sys.executable, *map(str, [*program, *argv])],
      env=env,
      capture_output=True,
      text=True,
      timeout=TIMEOUT,
      check=False,
  )


def run_cli(argv, capsys):
  """bort-train in this process: (exit status, stderr)."""
  try:
    code = train_program.main([str(a) for a in argv])
  except SystemExit as exit_:  # argparse errors
    code = exit_.code
  return code, capsys.readouterr().err


def flip_bytes(folder):
  """Flips 4 bytes in the middle of the largest file under ``folder``."""
  files = [p for p in Path(folder).rglob('*') if p.is_file()]
  path = max(files, key=lambda p: p.stat().st_size)
  data = bytearray(path.read_bytes())
  for i in range(len(data) // 2, len(data) // 2 + 4):
    data[i] ^= 0xFF
  path.write_bytes(bytes(data))


@pytest.fixture(autouse=True)
def _library_warnings_reach_caplog():
  """bort-train routes the bort_jax logger to stderr and stops propagation;
  the in-process tests want both."""
  logger = logging.getLogger('bort_jax')
  yield
  for handler in [
      h for h in logger.handlers if getattr(h, '_bort_train', False)
  ]:
    logger.removeHandler(handler)  # it writes to this test's captured stderr
  logger.propagate = True


# Bad input: messages, exit 2, nothing written.


@pytest.mark.parametrize(
    'extra, message',
    [
        (
            ['--learning-rate', 'nan'],
            'learning_rate must be a finite number, got nan',
        ),
        (
            ['--learning-rate', '-0.1'],
            'learning_rate must be positive, got -0.1',
        ),
        (['--learning-rate', '0'], 'learning_rate must be positive, got 0'),
        (
            ['--set', 'keep_checkpoints=0'],
            'keep_checkpoints must be positive, got 0',
        ),
        (['--max-steps', '-5'], '--max-steps must be >= 0, got -5'),
        (
            ['--batch-size', '1000'],
            'batch_size 1000 is larger than the 640 training examples',
        ),
        (
            ['--set', 'model_kwargs={"hidden_width": 8}'],
            "model_kwargs: mlp takes no argument(s) ['hidden_width']; its arguments: ",
        ),
        (
            ['--set', 'model=resnet1000'],
            "unknown model 'resnet1000'; valid model names: ['mlp', ",
        ),
        (
            ['--set', 'bort_exclude=["clasifier"]'],
            "bort_exclude: MLP has no layer 'clasifier'; its layer names: ",
        ),
        (
            ['--resume', '--overwrite'],
            '--resume and --overwrite exclude each other',
        ),
    ],
)
def test_bad_values_are_refused_before_anything_is_written(
    extra, message, tmp_path, mnist_data_dir, capsys
):
  workdir = tmp_path / 'run'
  code, err = run_cli(tiny_args(mnist_data_dir, workdir, *extra), capsys)
  assert code == 2
  assert 'bort-train: error: ' in err and message in err
  assert 'Traceback' not in err
  assert not workdir.exists()


def test_batch_not_divisible_by_the_devices(
    tmp_path, mnist_data_dir, subprocess_env
):
  """8 CPU devices, batch 60: a message, exit 2 (no XLA sharding traceback)."""
  env = {
      **subprocess_env,
      'XLA_FLAGS': '--xla_force_host_platform_device_count=8',
  }
  result = run_python(
      ['-m', 'bort_jax.programs.train'],
      tiny_args(mnist_data_dir, tmp_path / 'run', '--batch-size', '60'),
      env,
  )
  assert result.returncode == 2, result.stderr
  assert (
      'bort-train: error: batch_size 60 is not divisible by the 8 devices it is '
      'split over; use a multiple of 8'
  ) in result.stderr
  assert 'Traceback' not in result.stderr


def test_workdir_that_is_a_file_or_not_writable(
    tmp_path, mnist_data_dir, capsys
):
  a_file = tmp_path / 'file'
  a_file.write_text('not a directory')
  code, err = run_cli(tiny_args(mnist_data_dir, a_file), capsys)
  assert code == 2 and f'--workdir {a_file} is a file, not a directory' in err
  code, err = run_cli(tiny_args(mnist_data_dir, a_file / 'run'), capsys)
  assert code == 1, err
  assert (
      f'cannot use {a_file / "run"} as the work directory: a part of the path is a file'
      in err
  )
  assert 'Traceback' not in err
  read_only = tmp_path / 'read_only'
  read_only.mkdir(mode=0o500)
  if os.geteuid() != 0:  # root writes anywhere
    with pytest.raises(errors.WorkdirError, match='Permission denied'):
      workdir_lib.check_directory(read_only)


def test_truncated_config_json(tmp_path, mnist_data_dir, capsys):
  workdir = tmp_path / 'run'
  train(tiny(), workdir, mnist_data_dir, max_steps=1)
  text = (workdir / 'config.json').read_text()
  (workdir / 'config.json').write_text(text[: len(text) // 2])
  code, err = run_cli(resume_args(workdir, mnist_data_dir), capsys)
  assert code == 2
  assert (
      f'{workdir / "config.json"} is not valid JSON (truncated or edited?)'
      in err
  )
  with pytest.raises(errors.ConfigError, match='is not valid JSON'):
    train(tiny(), workdir, mnist_data_dir, resume=True)


def _config_file(text):
  def make(tmp_path):
    path = tmp_path / 'my_config.py'
    path.write_text(text)
    return ['--config', path, '--workdir', tmp_path / 'run']

  return make


def _tiny_run_with(*extra):
  return lambda tmp_path: [*TINY_ARGS, '--workdir', tmp_path / 'run', *extra]


def _workdir_entry(name):
  def make(tmp_path):
    (tmp_path / 'run' / name).mkdir(parents=True)
    return [*TINY_ARGS, '--workdir', tmp_path / 'run', '--overwrite']

  return make


@pytest.mark.parametrize(
    'make_args, code, message',
    [
        (
            _config_file('def get_config(:\n'),
            2,
            'my_config.py cannot be loaded: SyntaxError: ',
        ),
        (
            _config_file('def get_config():\n  raise RuntimeError("boom")\n'),
            2,
            'my_config.py cannot be loaded: RuntimeError: boom',
        ),
        (
            _config_file('import no_such_module_here\n'),
            2,
            "cannot be loaded: ModuleNotFoundError: No module named 'no_such",
        ),
        (
            _tiny_run_with('--set', 'model_kwargs={"hidden_features": [0]}'),
            2,
            "model_kwargs {'hidden_features': [0]} cannot build model 'mlp'",
        ),
        (
            lambda tmp_path: [*TINY_ARGS, '--workdir', tmp_path / ('x' * 300)],
            2,
            'File name too long',
        ),
        (
            _workdir_entry('metrics.jsonl'),
            1,
            'metrics.jsonl is not a regular file',
        ),
        (_workdir_entry('config.json'), 1, 'config.json is not a regular file'),
    ],
)
def test_bad_inputs_give_one_line(
    make_args, code, message, tmp_path, mnist_data_dir, capsys
):
  """Exit 2 for input no run can use, 1 for a work directory that cannot
  be used; one line naming the file or value, no traceback."""
  got, err = run_cli(
      [*make_args(tmp_path), '--data-dir', mnist_data_dir, '--no-progress'],
      capsys,
  )
  assert got == code, err
  assert 'Traceback' not in err
  (line,) = [l for l in err.splitlines() if 'bort-train: error: ' in l]
  assert message in line, err


def test_unreadable_dataset_info_gives_one_line(
    tmp_path, mnist_data_dir, capsys
):
  data_dir = tmp_path / 'tfds'
  shutil.copytree(Path(mnist_data_dir) / 'mnist', data_dir / 'mnist')
  (info,) = (data_dir / 'mnist').rglob('dataset_info.json')
  info.write_text('{not json')
  code, err = run_cli(tiny_args(data_dir, tmp_path / 'run'), capsys)
  assert code == 2, err
  assert (
      f'bort-train: error: the mnist data in {data_dir} cannot be read: '
      'ParseError: '
  ) in err
  assert 'Traceback' not in err


def test_signal_during_start_up_stops_before_writing(
    tmp_path, mnist_data_dir, monkeypatch, capsys
):
  open_splits = loop.input_pipeline.open_splits

  def interrupted_open(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    return open_splits(*args, **kwargs)

  monkeypatch.setattr(loop.input_pipeline, 'open_splits', interrupted_open)
  workdir = tmp_path / 'run'
  code, err = run_cli(tiny_args(mnist_data_dir, workdir), capsys)
  assert code == 130, err
  assert (
      'bort-train: interrupted (SIGINT) during the start-up; nothing written'
      in err
  )
  assert not workdir.exists()


# Non-finite loss.


def test_nonfinite_loss_stops_with_the_last_finite_checkpoint_newest(
    tmp_path, mnist_data_dir, capsys
):
  """AdamW at learning rate 1e38: step 1 leaves finite (huge) weights, step 2's
  loss overflows. The run stops (exit 1), checkpoint 1 stays the newest, and
  it holds finite weights."""
  workdir = tmp_path / 'run'
  code, err = run_cli(
      tiny_args(
          mnist_data_dir,
          workdir,
          *DIVERGING_ARGS,
          '--set',
          'checkpoint_every_steps=1',
          '--set',
          'log_every_steps=1',
      ),
      capsys,
  )
  assert code == 1
  assert (
      'bort-train: error: non-finite training loss (NaN or infinity) in 1 of the steps '
      '2..2; stopped without saving that state: the newest checkpoint, step 1'
  ) in err
  assert checkpoint_steps(workdir) == [1]
  assert [r['step'] for r in strict_records(workdir)] == [1]
  model, _ = checkpoint.restore_model(workdir)
  numerics.check_finite_params(
      model
  )  # what bort-explain calls before analysing


def test_skip_nonfinite_steps(tmp_path, mnist_data_dir):
  """With skip_nonfinite_steps the diverging updates are skipped and counted
  (train_loss null, strict JSON); past max_consecutive_nonfinite they are
  applied and the non-finite parameters stop the run before a checkpoint."""
  config = tiny(
      optimizer='adamw',
      learning_rate=1e38,
      log_every_steps=1,
      checkpoint_every_steps=2,
      skip_nonfinite_steps=True,
      max_consecutive_nonfinite=100,
  )
  result = train(config, tmp_path / 'skip', mnist_data_dir, max_steps=4)
  records = strict_records(tmp_path / 'skip')
  assert [
      (r['step'], r['train_loss'] is None, r.get('nonfinite_steps'))
      for r in records
  ] == [(1, False, None), (2, True, 1), (3, True, 1), (4, True, 1)]
  assert records == json.loads(json.dumps(result.metrics))
  assert bool(numerics.all_finite(result.state.params))
  assert checkpoint_steps(tmp_path / 'skip') == [2, 4]

  config = configs.replace(config, max_consecutive_nonfinite=1)
  with pytest.raises(
      errors.NonFiniteError,
      match=r'non-finite parameters at step 4 \(1 non-finite updates in a '
      r'row were skipped, then applied\).*checkpoint, step 2',
  ):
    train(config, tmp_path / 'give_up', mnist_data_dir, max_steps=4)
  assert checkpoint_steps(tmp_path / 'give_up') == [2]
  strict_records(tmp_path / 'give_up')


def test_diverged_run_with_skipped_steps_fails(
    tmp_path, mnist_data_dir, capsys
):
  """skip_nonfinite_steps keeps the parameters finite, but a run whose
  evaluation is not finite fails (exit 1) and says so."""
  workdir = tmp_path / 'run'
  code, err = run_cli(
      tiny_args(
          mnist_data_dir,
          workdir,
          *DIVERGING_ARGS,
          '--epochs',
          '1',
          '--set',
          'skip_nonfinite_steps=true',
          '--set',
          'max_consecutive_nonfinite=100',
      ),
      capsys,
  )
  assert code == 1, err
  assert (
      'bort-train: error: non-finite figures at step 10 (epoch 1): eval_loss'
      in err
  )
  assert checkpoint_steps(workdir) == []


# Checkpoints verified, metrics.jsonl consistent, against a run never stopped.

RESUME_CONFIG = {
    'checkpoint_every_steps': 2,
    'keep_checkpoints': 3,
    'optimizer': 'bort_adamw',
    'gamma': 1.0,
    'amplitude': 'adaptive',
}


@pytest.fixture(scope='module')
def whole_run(tmp_path_factory, mnist_data_dir):
  """The reference: the resume config, 20 steps, never stopped."""
  workdir = tmp_path_factory.mktemp('whole')
  result = train(tiny(**RESUME_CONFIG), workdir, mnist_data_dir)
  return result, strict_records(workdir)


def test_corrupt_and_truncated_checkpoints_fall_back(
    tmp_path, mnist_data_dir, whole_run, caplog
):
  """Checkpoints 2, 4, 6: 6 gets four flipped bytes in its parameters (orbax
  restores them without complaint: the checksum catches it), 4 loses a file.
  The resume reports both, continues from 2, and ends bit for bit where the
  run never stopped ends."""
  config = tiny(**RESUME_CONFIG)
  workdir = tmp_path / 'split'
  train(config, workdir, mnist_data_dir, max_steps=6)
  assert checkpoint_steps(workdir) == [2, 4, 6]
  flip_bytes(workdir / 'checkpoints' / '6' / 'params')
  files = sorted(
      p
      for p in (workdir / 'checkpoints' / '4' / 'opt_state').rglob('*')
      if p.is_file()
  )
  max(files, key=lambda p: p.stat().st_size).unlink()
  with caplog.at_level(logging.WARNING, logger='bort_jax'):
    result = train(config, workdir, mnist_data_dir, resume=True)
  warnings = [r.getMessage() for r in caplog.records if r.name == 'bort_jax']
  assert any(
      m.startswith(
          'checkpoint 6 is corrupt: ValueError: checksum mismatch in params/'
      )
      and m.endswith('; resuming from 2')
      for m in warnings
  ), warnings
  assert any(
      m.startswith('checkpoint 4 is corrupt: ')
      and m.endswith('; resuming from 2')
      for m in warnings
  ), warnings
  assert sorted(
      int(p.name) for p in (workdir / 'corrupt_checkpoints').iterdir()
  ) == [4, 6]
  whole, whole_records = whole_run
  assert_trees_equal(whole.state.params, result.state.params)
  assert_trees_equal(whole.state.opt_state, result.state.opt_state)
  assert without_timing(strict_records(workdir)) == without_timing(
      whole_records
  )


def test_no_usable_checkpoint_moves_nothing(tmp_path, mnist_data_dir, capsys):
  workdir = tmp_path / 'run'
  config = tiny(**RESUME_CONFIG)
  train(config, workdir, mnist_data_dir, max_steps=2)
  record_path = workdir / 'checkpoint_records' / '2.json'
  record = json.loads(record_path.read_text())
  key = min(k for k in record['sha256'] if k.startswith('params/'))
  record['sha256'][key] = '0' * 64
  record_path.write_text(json.dumps(record))
  code, err = run_cli(resume_args(workdir, mnist_data_dir), capsys)
  assert code == 1
  assert (
      f'bort-train: error: no usable checkpoint in {(workdir / "checkpoints").absolute()}: '
      f'checkpoint 2 is corrupt: ValueError: checksum mismatch in {key}'
  ) in err
  assert (
      checkpoint_steps(workdir) == [2]
      and not (workdir / 'corrupt_checkpoints').exists()
  )
  with pytest.raises(ValueError, match='checksum mismatch'):
    checkpoint.restore_model(workdir, step=2)


def test_metrics_consistent_after_a_crash(
    tmp_path, mnist_data_dir, whole_run, caplog
):
  """A run killed after step 7, its last finished checkpoint 4 (6 and 7 were
  not written): metrics.jsonl holds a record of step 6 and a partial line.
  The resume drops both and writes the same records as the run never
  stopped; the epoch's average covers steps 1-10 across the resume."""
  config = tiny(**RESUME_CONFIG)
  workdir = tmp_path / 'split'
  train(config, workdir, mnist_data_dir, max_steps=7)
  for step in (6, 7):
    shutil.rmtree(workdir / 'checkpoints' / str(step))
  with (workdir / 'metrics.jsonl').open('a') as f:
    f.write(json.dumps({'step': 6, 'epoch': 0.6, 'train_loss': 1.0}) + '\n')
    f.write('{"step": 7, "epoch": 0.7, "train_lo')
  with caplog.at_level(logging.WARNING, logger='bort_jax'):
    result = train(config, workdir, mnist_data_dir, resume=True)
  assert any(
      'dropped 2 record(s) after step 4' in r.getMessage()
      for r in caplog.records
  )
  whole, whole_records = whole_run
  records = strict_records(workdir)
  assert without_timing(records) == without_timing(whole_records)
  assert (
      records[0]['train_loss'] == whole_records[0]['train_loss']
  )  # the epoch average
  assert_trees_equal(whole.state.params, result.state.params)


# A run killed (SIGKILL) or stopped at any point and resumed writes the same
# records and ends with the same parameters as a run never stopped. 2 epochs of
# 10 steps, a record every 3 steps, a checkpoint every 5: a checkpoint at an
# epoch end, and checkpoints holding the sums of a record in progress.
CRASH_CONFIG = {'log_every_steps': 3, 'checkpoint_every_steps': 5}
CRASH_ARGS = [
    *TINY_ARGS,
    '--set',
    'log_every_steps=3',
    '--set',
    'checkpoint_every_steps=5',
]


@pytest.fixture(scope='module')
def crash_reference(tmp_path_factory, mnist_data_dir):
  """The run never stopped: its final params and its records."""
  workdir = tmp_path_factory.mktemp('never_stopped')
  result = train(tiny(**CRASH_CONFIG), workdir, mnist_data_dir)
  return result.state.params, strict_records(workdir)


@pytest.mark.parametrize(
    'point, n',
    [
        ('after_step', 3),  # a record written, no checkpoint yet
        ('after_step', 5),  # right after a checkpoint holding a record's sums
        ('in_eval', 1),  # during the first epoch's evaluation
        ('after_step', 10),  # at an epoch end, evaluated and saved
        ('in_eval', 2),  # during the final evaluation
        ('max_steps', 6),  # --max-steps at a record's step
        ('max_steps', 10),  # --max-steps at an epoch end
    ],
)
def test_resume_after_a_stop_equals_the_run_never_stopped(
    point, n, tmp_path, mnist_data_dir, subprocess_env, crash_reference, capsys
):
  workdir = tmp_path / 'run'
  args = [*CRASH_ARGS, '--data-dir', mnist_data_dir, '--workdir', workdir]
  if point == 'max_steps':
    code, err = run_cli([*args, '--max-steps', n], capsys)
    assert code == 0, err
  else:
    killed = run_python(
        [Path(__file__).with_name('crash_worker.py'), point, n],
        args,
        subprocess_env,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
  code, err = run_cli([*args, '--resume'], capsys)
  assert code == 0, err
  params, records = crash_reference
  assert without_timing(strict_records(workdir)) == without_timing(records)
  model, _ = checkpoint.restore_model(workdir)
  assert_trees_equal(params, nnx.state(model, nnx.Param))


def test_unverifiable_checkpoint_refused_unless_allowed(
    tmp_path, mnist_data_dir, whole_run, capsys
):
  """Without checkpoint_records/ no checkpoint can be verified: the resume is
  refused; allowed explicitly, it ends where the run never stopped ends (the
  running sums are in the checkpoint itself)."""
  workdir = tmp_path / 'run'
  train(tiny(**RESUME_CONFIG), workdir, mnist_data_dir, max_steps=5)
  shutil.rmtree(workdir / 'checkpoint_records')
  args = ['--workdir', workdir, '--resume', '--data-dir', mnist_data_dir]
  code, err = run_cli([*args, '--no-progress'], capsys)
  assert code == 1
  assert (
      'checkpoint 5 cannot be verified: it has no record in '
      'checkpoint_records/ (pass --allow-unverified-checkpoint'
  ) in err
  assert checkpoint_steps(workdir) == [2, 4, 5]
  code, err = run_cli(
      [*args, '--no-progress', '--allow-unverified-checkpoint'], capsys
  )
  assert code == 0, err
  assert (
      'checkpoint 5 has no checkpoint_records record: restored unverified'
      in err
  )
  whole, whole_records = whole_run
  assert without_timing(strict_records(workdir)) == without_timing(
      whole_records
  )
  model, _ = checkpoint.restore_model(workdir)
  assert_trees_equal(whole.state.params, nnx.state(model, nnx.Param))


def _checkpoints_a_file(workdir, mnist_data_dir):
  workdir.mkdir()
  (workdir / 'checkpoints').write_text('')
  return [], f'{workdir / "checkpoints"} is not a folder'


def _newest_checkpoint_a_fifo(workdir, mnist_data_dir):
  train(tiny(**RESUME_CONFIG), workdir, mnist_data_dir, max_steps=4)
  shutil.rmtree(workdir / 'checkpoints' / '4')
  os.mkfifo(workdir / 'checkpoints' / '4')
  return ['--resume'], f'{workdir / "checkpoints" / "4"} is not a folder'


def _file_size_limit(workdir, mnist_data_dir):
  return [], f'cannot write checkpoints in {workdir / "checkpoints"}'


@pytest.mark.parametrize(
    'fault', [_checkpoints_a_file, _newest_checkpoint_a_fifo, _file_size_limit]
)
def test_failed_checkpoint_write_ends_the_run(
    fault, tmp_path, mnist_data_dir, subprocess_env
):
  """No hang: exit 1 and one message naming the path (a subprocess, so that
  a hang fails the test instead of the suite; the file size limit makes
  orbax's background writes fail)."""
  workdir = tmp_path / 'run'
  extra, message = fault(workdir, mnist_data_dir)
  # bort-train with files limited to 20 kB (set in the child itself: a
  # preexec_fn would fork this multithreaded process).
  limited = (
      'import resource, runpy; '
      'resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000)); '
      "runpy.run_module('bort_jax.programs.train', run_name='__main__')"
  )
  result = run_python(
      (
          ['-c', limited]
          if fault is _file_size_limit
          else ['-m', 'bort_jax.programs.train']
      ),
      tiny_args(
          mnist_data_dir,
          workdir,
          '--set',
          'checkpoint_every_steps=2',
          *extra,
      ),
      subprocess_env,
  )
  assert result.returncode == 1, result.stderr
  errors_ = [
      line
      for line in result.stderr.splitlines()
      if line.startswith('bort-train: error: ')
  ]
  assert len(errors_) == 1 and message in errors_[0], result.stderr


# One run per work directory.


def test_previous_run_resume_and_overwrite(tmp_path, mnist_data_dir, capsys):
  workdir = tmp_path / 'run'
  args = tiny_args(mnist_data_dir, workdir, '--set', 'log_every_steps=1')
  assert run_cli([*args, '--max-steps', '2'], capsys)[0] == 0
  code, err = run_cli([*args, '--max-steps', '3'], capsys)
  assert code == 1
  assert (
      f'bort-train: error: {workdir} holds a previous run (config.json, 1 checkpoint(s), '
      '2 metrics record(s)); pass resume=True (--resume) to continue it, overwrite=True '
      '(--overwrite) to discard it'
  ) in err
  code, err = run_cli([*args, '--seed', '1', '--resume'], capsys)
  assert code == 2 and 'cannot resume' in err and "'seed': (0, 1)" in err
  assert json.loads((workdir / 'config.json').read_text())['seed'] == 0
  code, err = run_cli(
      [*args, '--seed', '1', '--max-steps', '3', '--overwrite'], capsys
  )
  assert code == 0, err
  assert json.loads((workdir / 'config.json').read_text())['seed'] == 1
  assert [r['step'] for r in strict_records(workdir)] == [1, 2, 3]
  assert checkpoint_steps(workdir) == [3]


def _wait_for_records(workdir, count, process, deadline=TIMEOUT):
  path = Path(workdir) / 'metrics.jsonl'
  end = time.monotonic() + deadline
  while time.monotonic() < end:
    if path.is_file() and path.read_text().count('\n') >= count:
      return
    if process is not None and process.poll() is not None:
      pytest.fail(f'the run ended early: {process.communicate()}')
    time.sleep(0.05)
  pytest.fail('no metrics record in time')


def test_second_process_sigterm_kill9_resume(
    tmp_path, mnist_data_dir, subprocess_env, capsys
):
  """A long run A (a subprocess, paused with SIGSTOP meanwhile): a second
  bort-train in its work directory fails at once naming A; SIGTERM makes A
  checkpoint and exit 143. Resumed (B), then killed with SIGKILL (its lock
  dies with it), then resumed to step N: the metrics are unique and
  increasing, and the parameters equal those of one uninterrupted run to
  step N, bit for bit."""
  workdir = tmp_path / 'run'
  args = tiny_args(
      mnist_data_dir,
      str(workdir),
      '--epochs',
      '1000',
      '--set',
      'log_every_steps=3',
      '--set',
      'checkpoint_every_steps=7',
  )
  start = lambda *extra: subprocess.Popen(
      [sys.executable, '-m', 'bort_jax.programs.train', *args, *extra],
      env=subprocess_env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )
  first = start()
  try:
    _wait_for_records(workdir, 1, first)
    first.send_signal(
        signal.SIGSTOP
    )  # few steps to replay below; the lock stays held
    code, err = run_cli([*args, '--resume'], capsys)
    assert code == 1
    assert (
        f'bort-train: error: work directory {workdir} is in use by pid {first.pid} on '
        in err
    )
    first.send_signal(signal.SIGTERM)
    first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=TIMEOUT)
  finally:
    first.kill()
  assert first.returncode == 143, err
  stopped = int(err.split('interrupted (SIGTERM) at step ')[1].split(';')[0])
  assert 'checkpoint saved; resume with --resume' in err
  assert checkpoint_steps(workdir)[-1] == stopped
  assert strict_records(workdir)[-1]['step'] <= stopped

  resumed = start('--resume')
  try:
    _wait_for_records(workdir, len(strict_records(workdir)) + 3, resumed)
  finally:
    resumed.kill()  # SIGKILL: no checkpoint, records past the last one
    resumed.communicate(timeout=TIMEOUT)
  final_step = strict_records(workdir)[-1]['step'] + 5
  code, err = run_cli([*args, '--resume', '--max-steps', final_step], capsys)
  assert code == 0, err
  records = strict_records(workdir)
  assert checkpoint_steps(workdir)[-1] == final_step

  config = checkpoint.load_config(workdir)
  reference = train(
      config, tmp_path / 'reference', mnist_data_dir, max_steps=final_step
  )
  model, _ = checkpoint.restore_model(workdir)
  assert_trees_equal(reference.state.params, nnx.state(model, nnx.Param))
  assert without_timing(records) == without_timing(
      strict_records(tmp_path / 'reference')
  )


# SIGINT in process.


def test_sigint_saves_a_checkpoint(tmp_path, mnist_data_dir, capsys):
  workdir = tmp_path / 'run'
  args = tiny_args(
      mnist_data_dir, workdir, '--epochs', '1000', '--set', 'log_every_steps=2'
  )

  def interrupt():
    path, end = workdir / 'metrics.jsonl', time.monotonic() + TIMEOUT
    while time.monotonic() < end and not (path.is_file() and path.read_text()):
      time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGINT)  # in any case: the run must not go on

  thread = threading.Thread(target=interrupt, daemon=True)
  thread.start()
  code, err = run_cli(args, capsys)
  thread.join()
  assert code == 130
  stopped = int(
      err.split('bort-train: interrupted (SIGINT) at step ')[1].split(';')[0]
  )
  # The newest checkpoint is the interrupted step (on a slow machine a regular
  # epoch-end checkpoint may come before it).
  assert checkpoint_steps(workdir)[-1] == stopped
  assert strict_records(workdir)[-1]['step'] <= stopped
  code, err = run_cli([*args, '--resume', '--max-steps', stopped + 2], capsys)
  assert code == 0, err
  assert checkpoint_steps(workdir)[-1] == stopped + 2
  strict_records(workdir)


# bort-prepare-mnist and the IDX files.


def test_prepare_mnist_verifies_what_it_reports(
    tmp_path, mnist_data_dir, mnist_idx_dir, capsys
):
  data_dir = tmp_path / 'tfds'
  shutil.copytree(Path(mnist_data_dir) / 'mnist', data_dir / 'mnist')
  assert (
      prepare_program.main(
          ['--idx-dir', str(mnist_idx_dir), '--data-dir', str(data_dir)]
      )
      == 0
  )
  assert '(train 60000, test 10000;' in capsys.readouterr().out
  (train_file,) = (data_dir / 'mnist' / '3.0.1').glob(
      'mnist-train.array_record*'
  )
  train_file.unlink()
  assert (
      prepare_program.main(
          ['--idx-dir', str(mnist_idx_dir), '--data-dir', str(data_dir)]
      )
      == 1
  )
  captured = capsys.readouterr()
  assert 'ready' not in captured.out
  assert (
      f'bort-prepare-mnist: error: mnist in {data_dir / "mnist" / "3.0.1"} is '
      f'incomplete: the train split file {train_file.name} is missing'
  ) in captured.err
  with pytest.raises(FileNotFoundError, match='is incomplete'):
    mnist_idx.ensure_mnist(data_dir)  # what bort-train calls


def test_idx_zlib_errors_name_the_file(tmp_path, mnist_idx_dir, capsys):
  idx_dir = tmp_path / 'idx'
  shutil.copytree(mnist_idx_dir, idx_dir)
  labels = idx_dir / 't10k-labels-idx1-ubyte.gz'
  data = bytearray(labels.read_bytes())
  middle = len(data) // 2
  data[middle : middle + 20] = bytes(20)  # inside the deflate stream
  labels.write_bytes(bytes(data))
  with pytest.raises(
      mnist_idx.IdxFormatError,
      match=rf'{labels}: cannot decompress \(corrupt or truncated gzip',
  ):
    mnist_idx.read_idx(labels)
  code = prepare_program.main(
      ['--idx-dir', str(idx_dir), '--data-dir', str(tmp_path / 'out')]
  )
  assert code == 1
  assert (
      f'bort-prepare-mnist: error: {labels}: cannot decompress'
      in capsys.readouterr().err
  )
