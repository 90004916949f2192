"""The training loop on MNIST subsets: metrics.jsonl, checkpoints, resuming bit
for bit, restore_model, and the command line end to end."""

import json

import numpy as np
import pytest
from flax import nnx

from testing import assert_trees_equal, train

from bort_jax import configs
from bort_jax.data import mnist_idx
from bort_jax.programs import train as train_program
from bort_jax.training import checkpoint, input_pipeline, loop

pytestmark = pytest.mark.expensive

EPOCH_FIELDS = {
    'step',
    'epoch',
    'train_loss',
    'train_accuracy',
    'eval_loss',
    'eval_accuracy',
    'eval_count',
    'learning_rate',
    'step_time',
    'elapsed',
    'orthogonality',
}
FIGURES = {
    f'{figure}/{stat}'
    for figure in ('relative_error', 'mean_abs_cosine', 'norm_spread')
    for stat in ('mean', 'max')
}


def read_metrics(workdir):
  return [
      json.loads(line)
      for line in (workdir / 'metrics.jsonl').read_text().splitlines()
  ]


def mnist_mlp_args(workdir, data_dir):
  """bort-train's arguments for the default MLP run, no progress bar."""
  return [
      '--config',
      'mnist_mlp',
      '--workdir',
      str(workdir),
      '--data-dir',
      str(data_dir),
      '--no-progress',
  ]


def test_finished_run_writes_records_checkpoints_and_a_model(
    tmp_path, mnist_data_dir, tiny_config
):
  """A tiny run's metrics.jsonl, config.json, checkpoints and restore_model;
  rerunning it needs resume=True and the same config."""
  config = tiny_config('mnist_mlp', log_every_steps=4)
  result = train(config, tmp_path, mnist_data_dir)

  records = read_metrics(tmp_path)
  assert records == json.loads(json.dumps(result.metrics))
  epoch_records = [r for r in records if 'eval_accuracy' in r]
  assert [(r['step'], r['epoch']) for r in epoch_records] == [(10, 1), (20, 2)]
  assert [r['step'] for r in records if 'eval_accuracy' not in r] == [
      4,
      8,
      12,
      16,
  ]
  for record in epoch_records:
    assert set(record) == EPOCH_FIELDS
    assert (
        record['eval_count'] == config.eval_examples
    )  # 300 in batches of 128: padding masked
    assert 0.0 <= record['eval_accuracy'] <= 1.0 and np.isfinite(
        record['eval_loss']
    )
    assert set(record['orthogonality']) == FIGURES
    assert record['step_time'] > 0
  assert epoch_records[-1]['eval_accuracy'] > 0.5
  assert (
      epoch_records[-1]['learning_rate'] < epoch_records[0]['learning_rate']
  )  # cosine

  assert json.loads((tmp_path / 'config.json').read_text()) == configs.to_dict(
      config
  )
  assert sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir()) == [
      10,
      20,
  ]
  model, saved = checkpoint.restore_model(tmp_path)
  assert saved == configs.to_dict(config)
  assert_trees_equal(nnx.state(model, nnx.Param), result.state.params)
  test = input_pipeline.open_splits(config, data_dir=mnist_data_dir)[1]
  batch = next(input_pipeline.eval_batches(config, test))
  assert np.mean(np.argmax(model(batch['image']), -1) == batch['label']) > 0.5

  with pytest.raises(FileExistsError, match='pass resume=True'):
    train(config, tmp_path, mnist_data_dir)
  with pytest.raises(ValueError, match=r"different config.*'seed': \(0, 1\)"):
    train(
        configs.replace(config, seed=1), tmp_path, mnist_data_dir, resume=True
    )


@pytest.mark.parametrize(
    'name, stop_at, parallel',
    [
        ('mnist_mlp', 7, 'jit'),  # mid-epoch
        ('mnist_mlp', 10, 'pmap'),  # at an epoch's end
    ],
)
def test_interrupted_run_resumes_bit_for_bit(
    name, stop_at, parallel, tmp_path, mnist_data_dir, tiny_config
):
  """Stop at step N, resume to the end: the same params and optimizer state as
  a run never stopped, bit for bit (the data order depends on (seed, epoch,
  step) only, every random number lives in the state)."""
  config = tiny_config(
      name,
      optimizer='bort_adamw',
      gamma=1.0,
      amplitude='adaptive',
      parallel=parallel,
      checkpoint_every_steps=3,
  )
  whole = train(config, tmp_path / 'whole', mnist_data_dir)
  first = train(config, tmp_path / 'split', mnist_data_dir, max_steps=stop_at)
  assert int(first.state.step) == stop_at
  saved = sorted(
      int(p.name) for p in (tmp_path / 'split' / 'checkpoints').iterdir()
  )
  expected = sorted({*range(3, stop_at + 1, 3), stop_at})[
      -config.keep_checkpoints :
  ]
  assert saved == expected  # every 3 steps and on stopping, the last 2 kept
  second = train(config, tmp_path / 'split', mnist_data_dir, resume=True)
  assert int(second.state.step) == int(whole.state.step) == 20
  assert_trees_equal(whole.state.params, second.state.params)
  assert_trees_equal(whole.state.opt_state, second.state.opt_state)
  assert_trees_equal(whole.state.model_state, second.state.model_state)
  final_whole = read_metrics(tmp_path / 'whole')[-1]
  final_split = read_metrics(tmp_path / 'split')[-1]
  for key in ('step', 'eval_loss', 'eval_accuracy', 'orthogonality'):
    assert final_whole[key] == final_split[key]


def test_cli_compare_prints_both_runs(tmp_path, mnist_data_dir, capsys):
  workdir = tmp_path / 'compare'
  code = train_program.main(
      [
          '--config',
          'mnist_mlp',
          '--compare',
          'sgd,bort_sgd',
          '--workdir',
          str(workdir),
          '--data-dir',
          mnist_data_dir,
          '--epochs',
          '1',
          '--batch-size',
          '100',
          '--no-progress',
          '--set',
          'train_examples=300',
          '--set',
          'eval_examples=200',
          '--set',
          'model_kwargs={"hidden_features": [16]}',
      ]
  )
  assert code == 0
  table = capsys.readouterr().out.strip().splitlines()[-3:]
  assert table[0].split()[:3] == ['optimizer', 'test', 'acc']
  assert [line.split()[0] for line in table[1:]] == ['sgd', 'bort_sgd']
  for name in ('sgd', 'bort_sgd'):
    config = json.loads((workdir / name / 'config.json').read_text())
    assert config['optimizer'] == name and config['epochs'] == 1
    assert read_metrics(workdir / name)[-1]['eval_count'] == 200


def test_cli_missing_mnist_says_how_to_prepare_it(
    tmp_path, monkeypatch, capsys
):
  monkeypatch.delenv('BORT_MNIST_IDX_DIR', raising=False)
  code = train_program.main(
      mnist_mlp_args(tmp_path / 'run', str(tmp_path / 'empty'))
  )
  assert code == 1
  assert 'bort-prepare-mnist' in capsys.readouterr().err


def test_ensure_mnist_when_prepared_or_missing(tmp_path, mnist_data_dir):
  """Preparing from IDX files is what built ``mnist_data_dir``; here the other cases."""
  assert mnist_idx.ensure_mnist(mnist_data_dir)  # prepared: nothing to do
  assert not mnist_idx.ensure_mnist(
      tmp_path / 'empty'
  )  # nothing to prepare from
  with pytest.raises(
      FileNotFoundError, match='does not hold the four MNIST IDX files'
  ):
    mnist_idx.ensure_mnist(tmp_path / 'other', tmp_path)


def test_cli_prepares_mnist_from_the_idx_dir_env(
    tmp_path, mnist_idx_dir, monkeypatch
):
  """$BORT_MNIST_IDX_DIR (or --mnist-idx-dir) is where bort-train prepares MNIST
  from when the data dir lacks it, before training."""
  calls = []
  monkeypatch.setattr(
      mnist_idx,
      'prepare_mnist',
      lambda idx_dir, data_dir: calls.append(('prepare', idx_dir, data_dir)),
  )
  monkeypatch.setattr(
      loop,
      'train_and_evaluate',
      lambda config, workdir, **kwargs: calls.append(('train', config.name)),
  )
  monkeypatch.setenv('BORT_MNIST_IDX_DIR', str(mnist_idx_dir))
  data_dir = tmp_path / 'tfds'
  code = train_program.main(mnist_mlp_args(tmp_path / 'run', str(data_dir)))
  assert code == 0
  assert calls == [
      ('prepare', mnist_idx_dir, str(data_dir)),
      ('train', 'mnist_mlp'),
  ]
