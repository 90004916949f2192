"""experiments/reproduce_mnist.py, smoke-run on a subset of the real MNIST.

One seed, one epoch (two for the longer part), two gammas and two modes on
256 training examples: every part runs (16 runs), each for a few steps.
"""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.expensive


def run_to_the_end(command, repo_root, env, timeout):
  """Runs ``command`` in the repository; asserts it exits with 0."""
  completed = subprocess.run(
      command,
      cwd=repo_root,
      env=env,
      capture_output=True,
      text=True,
      timeout=timeout,
  )
  assert completed.returncode == 0, completed.stderr[-3000:]


@pytest.fixture(scope='module')
def reproduction(tmp_path_factory, mnist_data_dir, repo_root, subprocess_env):
  workdir = tmp_path_factory.mktemp('reproduce')
  command = [
      sys.executable,
      '-m',
      'experiments.reproduce_mnist',
      '--data-dir',
      mnist_data_dir,
      '--workdir',
      str(workdir),
      '--seeds',
      '0',
      '--epochs-mlp',
      '1',
      '--epochs-cnn',
      '1',
      '--epochs-cnn-long',
      '2',
      '--gammas',
      '0',
      '2',
      '--modes',
      'l2-full',
      'l2-row',
      '--train-examples',
      '256',
      '--eval-examples',
      '200',
  ]
  env = subprocess_env
  run_to_the_end(command, repo_root, env, timeout=1800)
  return command, env, workdir


def _results(workdir):
  return json.loads((workdir / 'results.json').read_text())['results']


def test_every_planned_run_is_reported(reproduction):
  _, _, workdir = reproduction
  results = _results(workdir)
  table = [r for r in results if r['part'] == 'table']
  assert {(r['model'], r['optimizer'], r['seed']) for r in table} == {
      (model, optimizer, seed)
      for model in ('mlp', 'invertible_cnn')
      for optimizer in ('sgd', 'bort_sgd', 'adamw', 'bort_adamw')
      for seed in (0,)
  }
  assert sorted(r['gamma'] for r in results if r['part'] == 'sweep') == [
      0.0,
      2.0,
  ]
  assert sorted(r['mode'] for r in results if r['part'] == 'modes') == [
      'l2-full',
      'l2-row',
  ]
  longer = [r for r in results if r['part'] == 'longer']
  assert {(r['optimizer'], r['epochs'], r['seed']) for r in longer} == {
      (optimizer, 2, seed)
      for optimizer in ('adamw', 'bort_adamw')
      for seed in (0,)
  }
  head = [r for r in results if r['part'] == 'head']
  assert {(r['model'], r['optimizer'], r['seed']) for r in head} == {
      (model, optimizer, seed)
      for model in ('mlp', 'invertible_cnn')
      for optimizer in ('bort_sgd', 'bort_adamw')
      for seed in (0,)
  }
  assert all(r['constrained_relative_error'] >= 0.0 for r in head)
  assert {r['model']: r['bort_exclude'] for r in head} == {
      'mlp': ['^layers/3/kernel$'],
      'invertible_cnn': ['^layers/9/kernel$'],
  }
  for r in results:
    assert 0.0 <= r['eval_accuracy'] <= 1.0
    assert r['orthogonality']['relative_error/mean'] >= 0.0
    if r['part'] in ('sweep', 'modes'):
      assert r['reconstruction_mse'] > 0.0


def test_baselines_have_no_bort_term_and_bort_runs_do(reproduction):
  _, _, workdir = reproduction
  for r in _results(workdir):
    if r['part'] == 'table':
      assert (r['gamma'] > 0) == r['optimizer'].startswith('bort'), r['run']


def test_parts_share_identical_runs(reproduction):
  _, _, workdir = reproduction
  by_part = {}
  for r in _results(workdir):
    if (
        r['model'] == 'invertible_cnn'
        and r['optimizer'] == 'bort_adamw'
        and r['seed'] == 0
        and r['gamma'] == 2.0
        and r['mode'] == 'l2-full'
        and not r['bort_exclude']
        and r['epochs'] == 1
    ):
      by_part[r['part']] = r['run']
  assert set(by_part) == {'table', 'sweep', 'modes'}
  assert len(set(by_part.values())) == 1
  # table, sweep, modes, free head, longer: runs differing in epochs get their own directory.
  assert len(list((workdir / 'runs').iterdir())) == 8 + 1 + 1 + 4 + 2


def test_markdown_and_plot(reproduction):
  _, _, workdir = reproduction
  text = (workdir / 'results.md').read_text()
  assert 'Subset: the first 256 training and 200 test examples' in text
  for optimizer in ('sgd', 'bort_sgd', 'adamw', 'bort_adamw'):
    assert (
        f'| mlp | {optimizer} |' in text
        and f'| invertible_cnn | {optimizer} |' in text
    )
  assert '## CNN, bort_adamw: gamma' in text and '| l2-row |' in text
  assert '## The classifier left out of the Bort term' in text
  assert '## CNN, a longer budget' in text
  assert (workdir / 'gamma_sweep.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_a_second_invocation_reads_finished_runs_back(reproduction, repo_root):
  command, env, workdir = reproduction
  metrics = sorted((workdir / 'runs').glob('*/metrics.jsonl'))
  before = {path: path.stat().st_mtime_ns for path in metrics}
  first = _results(workdir)
  run_to_the_end(command, repo_root, env, timeout=600)
  assert {path: path.stat().st_mtime_ns for path in metrics} == before
  assert [r['eval_accuracy'] for r in _results(workdir)] == [
      r['eval_accuracy'] for r in first
  ]


def test_the_free_head_reaches_the_training_config(reproduction):
  _, _, workdir = reproduction
  free_head_runs = sorted(workdir.glob('runs/*-free_head-*'))
  assert len(free_head_runs) == 4
  for run in free_head_runs:
    config = json.loads((run / 'config.json').read_text())
    assert config['optimizer'].startswith('bort_')
    assert config['bort_exclude'] == [
        '^layers/3/kernel$'
        if run.name.startswith('mnist_mlp')
        else '^layers/9/kernel$'
    ]
