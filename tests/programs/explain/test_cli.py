"""Smoke test of the ``bort-explain`` protocol on a tiny budget: one seed of
the Bort-invertible CNN, trained through the library loop into bort-train
work directories, measured, reported, and read back on a second call."""

import json
import shutil

import pytest

from bort_jax.programs.explain import main as explain_program
from bort_jax.programs.explain import protocol
from bort_jax.training import checkpoint, loop

pytestmark = pytest.mark.expensive

TINY = [
    '--models',
    'bort_invertible_cnn',
    '--seeds',
    '0',
    '--epochs',
    '1',
    '--train-examples',
    '128',
    '--set',
    'eval_examples=100',
    '--set',
    'batch_size=32',
    '--set',
    'model_kwargs.stem_channels=9',
    '--reconstruction-examples',
    '4',
    '--inversion-examples',
    '2',
    '--inversion-steps',
    '2',
    '--saliency-examples',
    '2',
    '--sat-k',
    '4',
    '--adversarial-examples',
    '4',
    '--pgd-steps',
    '2',
    '--ig-steps',
    '2',
    '--deletion-steps',
    '2',
    '--figure-examples',
    '2',
]


def test_cli_trains_measures_reports_and_reads_back(
    tmp_path, mnist_data_dir, monkeypatch
):
  monkeypatch.delenv('TFDS_DATA_DIR', raising=False)
  out = tmp_path / 'report'
  argv = ['--out', str(out), '--data-dir', mnist_data_dir, *TINY]
  assert explain_program.main(argv) == 0
  for name in (
      'report.json',
      'report.md',
      'reconstruction_pearson.png',
      'adversarial_success_vs_l2.png',
      'saliency_sanity.png',
      'bort_invertible_cnn_reconstruction_layers.png',
      'bort_invertible_cnn_saliency.png',
  ):
    assert (out / name).is_file(), name
  report = json.loads((out / 'report.json').read_text())
  arch = report['architectures']['bort_invertible_cnn']
  assert set(arch['summary']) == {'baseline', 'bort'}
  assert arch['summary']['bort']['reconstruction']['layers'] == [
      'conv1_lrelu',
      'down1_lrelu',
      'conv2_lrelu',
      'down2_lrelu',
  ]
  assert report['acceptance']['evaluated']
  assert len(report['acceptance']['criteria']) == 4
  markdown = (out / 'report.md').read_text()
  assert '## Acceptance criteria' in markdown
  # One seed: no interval and no t quantile; the baseline's config gamma
  # is not Bort's.
  assert "One seed: every number is that seed's value" in markdown
  assert 't = ' not in markdown
  assert (
      'Baseline `adamw` (no Bort term) vs Bort `bort_adamw` (gamma 30.0)'
      in (markdown)
  )
  # The runs were trained by the library loop, one per role, in the layout
  # WORKDIR/<config>/seed<k>/<optimizer>.
  for role, optimizer in (('baseline', 'adamw'), ('bort', 'bort_adamw')):
    run_dir = out / 'runs' / 'mnist_invertible_cnn' / 'seed0' / optimizer
    assert arch['runs']['0'][role]['workdir'] == str(run_dir)
    assert loop.last_evaluation(run_dir)['epoch'] == 1
  assert arch['runs']['0']['baseline']['gamma'] == 0.0
  assert arch['runs']['0']['bort']['gamma'] == 30.0  # the preset's
  # Finished runs are read back, not trained again.
  metrics = {
      p: p.stat().st_mtime_ns for p in (out / 'runs').rglob('metrics.jsonl')
  }
  args = explain_program.build_parser().parse_args(
      ['--data-dir', mnist_data_dir, *TINY]
  )

  protocol.train_runs(
      explain_program.training_configs(args),
      out / 'runs',
      data_dir=mnist_data_dir,
      log=lambda _: None,
  )
  assert {p: p.stat().st_mtime_ns for p in metrics} == metrics
  # The accuracy header counts the examples evaluated.
  assert 'test accuracy (100)' in markdown
  # Finished: the newest checkpoint is that of the final evaluation. Without
  # it, the run is not finished (its metrics.jsonl notwithstanding).
  run_dir = out / 'runs' / 'mnist_invertible_cnn' / 'seed0' / 'adamw'
  config = checkpoint.load_config(run_dir)
  final = protocol.final_evaluation(run_dir)
  assert protocol.is_finished(run_dir, config)
  shutil.rmtree(run_dir / 'checkpoints' / str(final['step']))
  assert not protocol.is_finished(run_dir, config)
  with pytest.raises(
      ValueError,
      match=f'is not a finished run: its final evaluation is at step '
      f'{final["step"]} but its checkpoints are at steps',
  ):
    protocol.final_evaluation(run_dir)


@pytest.mark.parametrize(
    'argv,match',
    [
        (['--baseline-workdir', '/nonexistent'], 'give both'),
        (['--models', 'resnet'], None),
        (['--seeds', '0,0'], None),
        (['--epochs', 'mlp=x'], None),
    ],
)
def test_cli_bad_arguments(argv, match, capsys):
  if match is None:
    with pytest.raises(SystemExit):
      explain_program.main(argv)
  else:
    assert explain_program.main(argv) == 2
    assert match in capsys.readouterr().err


@pytest.mark.parametrize(
    'argv, message',
    [
        (
            ['--reconstruction-examples', '-1'],
            'argument --reconstruction-examples: must be at least 1, got -1',
        ),
        (['--pgd-steps', '0'], 'argument --pgd-steps: must be at least 1'),
        (
            ['--learning-rate', 'nan'],
            'argument --learning-rate: must be a finite number > 0, got nan',
        ),
        (['--epochs', 'mlp=0'], 'argument --epochs: must be at least 1'),
    ],
)
def test_cli_numeric_options_are_checked(argv, message, capsys):
  with pytest.raises(SystemExit) as exit_:
    explain_program.build_parser().parse_args(argv)
  assert exit_.value.code == 2
  assert message in capsys.readouterr().err


def test_per_model_option():
  args = explain_program.build_parser().parse_args(
      ['--epochs', '3', '--train-examples', 'mlp=100,invertible_cnn=5']
  )
  assert args.epochs == {
      'bort_invertible_cnn': 3,
      'invertible_cnn': 3,
      'mlp': 3,
  }
  assert args.train_examples == {'mlp': 100, 'invertible_cnn': 5}
  runs = explain_program.training_configs(args)
  assert runs['mlp'][0]['bort'].train_examples == 100
  assert runs['bort_invertible_cnn'][1]['bort'].train_examples == (
      explain_program.DEFAULT_TRAIN_EXAMPLES['bort_invertible_cnn']
  )


def test_cli_refuses_an_unwritable_output_before_any_work(
    tmp_path, capsys, monkeypatch
):
  out = tmp_path / 'report'
  out.write_text('a file, not a folder')

  def fail(*args, **kwargs):
    raise AssertionError('MNIST was loaded before the output was checked')

  monkeypatch.setattr(explain_program, '_load_mnist', fail)
  status = explain_program.main(['--out', str(out)])
  assert status != 0
  assert str(out) in capsys.readouterr().err
