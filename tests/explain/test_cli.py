"""Smoke test of the ``bort-explain`` program on a tiny budget: it trains
through the library loop (bort-train's work directories) and reads them back."""

import json

import pytest

from bort_jax.programs.explain import main as explain_program
from bort_jax.programs.explain import report as report_module
from bort_jax.training import loop

TINY = ['--epochs', '1', '--no-mlp', '--channels', '4,8', '--batch-size', '32',
        '--train-examples', '640', '--set', 'eval_examples=200', '--eval-examples', '200',
        '--num-examples', '8', '--figure-examples', '3', '--inversion-steps', '5',
        '--inversion-examples', '2', '--pgd-steps', '3', '--ig-steps', '4',
        '--deletion-steps', '4']


def test_cli_smoke(tmp_path, mnist_data_dir, monkeypatch):
  monkeypatch.delenv('TFDS_DATA_DIR', raising=False)
  out = tmp_path / 'report'
  status = explain_program.main(['--out', str(out), '--data-dir', mnist_data_dir, *TINY])
  assert status == 0
  for name in ('report.json', 'report.md', 'invertible_cnn_reconstruction_top.png',
               'invertible_cnn_saliency.png', 'invertible_cnn_adversarial_bort.png',
               'invertible_cnn_gram.png', 'invertible_cnn_deletion_curves.png'):
    assert (out / name).is_file(), name
  report = json.loads((out / 'report.json').read_text())
  arch = report['architectures']['invertible_cnn']
  for section in ('reconstruction', 'inversion', 'saliency', 'adversarial', 'orthogonality'):
    assert set(arch['results'][section]) == {'baseline', 'bort'}, section
  assert set(arch['claims']) == {'reconstruction', 'saliency', 'adversarial'}
  assert 0 < arch['claims']['reconstruction']['mse_ratio']
  markdown = (out / 'report.md').read_text()
  assert '![saliency](invertible_cnn_saliency.png)' in markdown
  # report.md can be rewritten from report.json alone.
  (out / 'report.md').unlink()
  report_module.write_markdown(report, str(out))
  assert (out / 'report.md').read_text() == markdown

  # The pair was trained by the library loop into bort-train work directories.
  models = arch['models']
  for role, optimizer in (('baseline', 'adamw'), ('bort', 'bort_adamw')):
    run_dir = out / 'runs' / 'mnist_cnn' / optimizer
    assert models[role]['workdir'] == str(run_dir)
    assert models[role]['config']['optimizer'] == optimizer
    assert models[role]['config']['train_examples'] == 640
    assert loop.last_evaluation(run_dir)['epoch'] == 1
  assert models['baseline']['config']['gamma'] == 0.0
  assert models['bort']['config']['gamma'] == models['bort']['gamma'] > 0

  # Finished runs are read back, not trained again.
  metrics = {p: p.stat().st_mtime_ns for p in (out / 'runs').rglob('metrics.jsonl')}
  args = explain_program.build_parser().parse_args(['--data-dir', mnist_data_dir, *TINY])
  runs, _ = explain_program.train_pairs(args, out / 'runs')
  assert runs == {'invertible_cnn': {r: models[r]['workdir'] for r in ('baseline', 'bort')}}
  assert {p: p.stat().st_mtime_ns for p in metrics} == metrics


@pytest.mark.parametrize('argv,match', [
  (['--baseline-workdir', '/nonexistent'], 'give both'),
  (['--channels', '4,x'], None),
])
def test_cli_bad_arguments(argv, match, capsys):
  if match is None:
    with pytest.raises(SystemExit):
      explain_program.main(argv)
  else:
    assert explain_program.main(argv) == 2
    assert match in capsys.readouterr().err


def _summary(mean):
  return {'mean': mean, 'median': mean, 'std': 0.0}


def _results(mse_bort, mass_bort, likeness_ours):
  """Minimal analyse() results for check_claims."""
  rec = lambda mse, ssim: {'top_layer': 'top', 'layers': {'top': {
    'mse': _summary(mse), 'psnr': _summary(0.0), 'ssim': _summary(ssim)}},
    'top_layer_row_scaling': {'mse': _summary(mse), 'ssim': _summary(ssim)}}
  sal = lambda mass: {'stroke_area_fraction': _summary(0.15), **{
    m: {'deletion_auc': _summary(0.3), 'mass_on_strokes': _summary(mass)}
    for m in ('sat', 'gradient', 'gradient_x_input', 'integrated_gradients', 'random')}}
  adv = lambda likeness: {
    'ours': {'success_rate_targeted': 1.0, 'l2': _summary(5.0),
             'target_likeness': _summary(likeness)},
    'pgd': {'success_rate_targeted': 1.0, 'l2': _summary(5.0),
            'target_likeness': _summary(0.4)}}
  return {'reconstruction': {'baseline': rec(0.1, 0.2), 'bort': rec(mse_bort, 0.5)},
          'saliency': {'baseline': sal(0.3), 'bort': sal(mass_bort)},
          'adversarial': {'baseline': adv(0.3), 'bort': adv(likeness_ours)}}


@pytest.mark.parametrize('mse_bort,mass_bort,likeness,held,verdicts', [
  (0.02, 0.6, 0.8, (True, True, True), ('**held**',) * 3),
  (0.049, 0.31, 0.41, (True, True, True), ('**held, marginally**',) * 3),
  (0.06, 0.2, 0.3, (False, False, False), ('**did not hold**',) * 3),
  (0.051, 0.29, 0.39, (False, False, False), ('**did not hold, narrowly**',) * 3),
])
def test_check_claims_criteria(mse_bort, mass_bort, likeness, held, verdicts):
  claims = report_module.check_claims(_results(mse_bort, mass_bort, likeness))
  names = ('reconstruction', 'saliency', 'adversarial')
  assert tuple(claims[n]['held'] for n in names) == held
  assert tuple(report_module._verdict(claims[n]) for n in names) == verdicts  # pylint: disable=protected-access
