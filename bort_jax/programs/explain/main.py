"""``bort-explain``: the MNIST explainability experiment, baseline vs Bort.

Analyses two trained runs, work directories of ``bort-train``
(``--baseline-workdir`` and ``--bort-workdir``), or trains them first with
the library loop (:func:`bort_jax.training.loop.train_and_evaluate`, the
loop of ``bort-train``): the packaged recipes ``mnist_cnn`` (and, unless
``--no-mlp``, ``mnist_mlp``) with ``adamw`` and with ``bort_adamw``, the
AdamW-family settings of ``mnist_cnn`` (learning rate 2e-3, weight decay
1e-4, gamma 2) for both models. The runs go to ``WORKDIR/<config>/<optimizer>``
(``--workdir``, default ``OUT/runs``), the layout of ``bort-train
--compare adamw,bort_adamw``; finished runs there are read back, not
trained again. Then it measures reconstruction, saliency and adversarial
samples (:mod:`bort_jax.programs.explain.experiment`) and writes
``report.json``, PNG figures and ``report.md`` into ``--out``
(:mod:`bort_jax.programs.explain.report`).

MNIST comes from a tfds data dir (``--data-dir``, default
``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``); if it is not prepared
there, it is built from the IDX files in ``--idx-dir`` (default
``$BORT_MNIST_IDX_DIR``) with :func:`bort_jax.data.mnist_idx.prepare_mnist`.

Example::

  bort-explain --out reports/explain_mnist            # trains, ~6 min on 2 CPUs
  bort-explain --baseline-workdir runs/mnist_cnn/adamw \\
      --bort-workdir runs/mnist_cnn/bort_adamw --out reports/explain_runs
  python -m experiments.explain_mnist --help
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np

from bort_jax import configs
from bort_jax import data
from bort_jax.data import mnist_idx
from bort_jax.programs import train as train_program
from bort_jax.programs.explain import experiment
from bort_jax.programs.explain import report
from bort_jax.programs.prepare_mnist import IDX_DIR_ENV
from bort_jax.training import checkpoint
from bort_jax.training import loop

__all__ = ['build_parser', 'main', 'run', 'training_configs']

#: Baseline and Bort optimizers of the pairs trained here.
PAIR = (('baseline', 'adamw'), ('bort', 'bort_adamw'))


def _channels(text: str) -> tuple[int, ...]:
  try:
    channels = tuple(int(c) for c in text.split(','))
  except ValueError:
    raise argparse.ArgumentTypeError(
        f'expected comma-separated ints, got {text!r}') from None
  if not channels or min(channels) < 1:
    raise argparse.ArgumentTypeError(f'channels must be positive, got {text!r}')
  return channels


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser of ``bort-explain``."""
  cnn = configs.get_config('mnist_cnn')
  p = argparse.ArgumentParser(
      prog='bort-explain',
      description='Bort explainability experiment on MNIST: reconstruction, '
                  'backtracking saliency and explainable adversarial samples, '
                  'baseline (AdamW) vs Bort.')
  p.add_argument('--baseline-workdir', help='bort-train work dir of the baseline run')
  p.add_argument('--bort-workdir', help='bort-train work dir of the Bort run')
  p.add_argument('--out', default='explain_report',
                 help='report folder (default %(default)s)')
  p.add_argument('--data-dir', default=None,
                 help='tfds data dir (default $TFDS_DATA_DIR)')
  p.add_argument('--note', action='append', default=[],
                 help='a line added to the notes of report.md (repeatable)')
  p.add_argument('--idx-dir', default=None,
                 help='MNIST IDX files, used if the data dir is not prepared '
                      f'(default ${IDX_DIR_ENV})')
  train = p.add_argument_group(
      'training (when no work dirs are given): the mnist_cnn and mnist_mlp '
      'recipes with adamw and bort_adamw')
  train.add_argument('--workdir', default=None,
                     help='where the runs go, WORKDIR/<config>/<optimizer> '
                          '(default OUT/runs); finished runs are read back')
  train.add_argument('--epochs', type=int, default=None,
                     help=f'CNN epochs (default {cnn.epochs})')
  train.add_argument('--mlp-epochs', type=int, default=None,
                     help='MLP epochs (default: the mnist_mlp recipe\'s, '
                          f'{configs.get_config("mnist_mlp").epochs})')
  train.add_argument('--no-mlp', action='store_true', help='skip the MLP pair')
  train.add_argument('--batch-size', type=int, default=None,
                     help='default: each recipe\'s')
  train.add_argument('--learning-rate', type=float, default=cnn.learning_rate)
  train.add_argument('--weight-decay', type=float, default=cnn.weight_decay)
  train.add_argument('--gamma', type=float, default=cnn.gamma,
                     help='Bort coefficient (default %(default)s)')
  train.add_argument('--channels', type=_channels, default=None,
                     help='InvertibleCNN channels per stage (default: the model\'s)')
  train.add_argument('--mlp-hidden', type=_channels, default=None,
                     help='MLP hidden widths (default: the model\'s)')
  train.add_argument('--train-examples', type=int, default=0,
                     help='train on the first N training examples (0: all 60000)')
  train.add_argument('--seed', type=int, default=0)
  train.add_argument('--set', action='append', default=[], metavar='FIELD=VALUE',
                     help='override a config field of every run (repeatable; '
                          'see bort-train)')
  ana = p.add_argument_group('analysis')
  ana.add_argument('--eval-examples', type=int, default=2000,
                   help='test examples for the accuracy')
  ana.add_argument('--num-examples', type=int, default=100,
                   help='test examples analysed')
  ana.add_argument('--figure-examples', type=int, default=8)
  ana.add_argument('--sat-k', type=int, default=None,
                   help='SAT k (default: min(256, channels))')
  ana.add_argument('--inversion-steps', type=int, default=200)
  ana.add_argument('--inversion-examples', type=int, default=32)
  ana.add_argument('--pgd-steps', type=int, default=20)
  ana.add_argument('--ig-steps', type=int, default=32)
  ana.add_argument('--deletion-steps', type=int, default=28)
  return p


def _log(message: str) -> None:
  print(message, flush=True)


def training_configs(args: argparse.Namespace
                     ) -> dict[str, dict[str, ml_collections.ConfigDict]]:
  """The configs of the pairs trained here: ``{architecture: {role: config}}``.

  Each is a packaged recipe with the AdamW-family settings of the flags,
  then ``--set``; the baseline has ``gamma`` 0.
  """
  jobs = [('invertible_cnn', 'mnist_cnn', args.epochs,
           {'channels': list(args.channels)} if args.channels else {})]
  if not args.no_mlp:
    jobs.append(('mlp', 'mnist_mlp', args.mlp_epochs,
                 {'hidden_features': list(args.mlp_hidden)}
                 if args.mlp_hidden else {}))
  pairs = {}
  for arch, name, epochs, model_kwargs in jobs:
    recipe = configs.get_config(name)
    changes = dict(learning_rate=args.learning_rate,
                   weight_decay=args.weight_decay,
                   train_examples=args.train_examples, seed=args.seed)
    if epochs is not None:
      changes['epochs'] = epochs
    if args.batch_size is not None:
      changes['batch_size'] = args.batch_size
    if model_kwargs:
      changes['model_kwargs'] = model_kwargs
    pairs[arch] = {}
    for role, optimizer in PAIR:
      config = configs.replace(
          recipe, optimizer=optimizer,
          gamma=args.gamma if optimizer.startswith('bort') else 0.0, **changes)
      pairs[arch][role] = train_program.parse_config(
          config, train_program.set_overrides(args.set))
  return pairs


def train_pairs(args: argparse.Namespace, workdir: Path
                ) -> tuple[dict[str, dict[str, str]], dict[str, float]]:
  """Trains (or reads back) every run of :func:`training_configs`.

  Returns:
    ``({architecture: {role: run directory}}, {'train_<arch>': seconds})``.
  """
  runs, runtime = {}, {}
  for arch, pair in training_configs(args).items():
    start = time.perf_counter()
    runs[arch] = {}
    for role, config in pair.items():
      run_dir = workdir / config.name / config.optimizer
      record = loop.last_evaluation(run_dir)
      if record.get('epoch', 0) >= config.epochs and (
          configs.to_dict(checkpoint.load_config(run_dir))
          == configs.to_dict(config)):
        _log(f'{arch} {role}: reading the finished run in {run_dir}')
      else:
        _log(f'training {arch} with {config.optimizer} for {config.epochs} '
             f'epochs in {run_dir}')
        loop.train_and_evaluate(
            config, run_dir, data_dir=args.data_dir,
            resume=(run_dir / checkpoint.CHECKPOINT_DIR).exists(),
            progress=False, description=f'{arch} {role}')
      runs[arch][role] = os.fspath(run_dir)
    runtime[f'train_{arch}'] = time.perf_counter() - start
  return runs, runtime


def _load_mnist(args: argparse.Namespace):
  data_dir = data.resolve_data_dir(args.data_dir)
  idx_dir = args.idx_dir or os.environ.get(IDX_DIR_ENV) or None
  if not mnist_idx.ensure_mnist(data_dir, idx_dir):
    _log(f'MNIST is not prepared in {data_dir} and no IDX folder was given')
  split = f'train[:{args.train_examples}]' if args.train_examples else 'train'
  train = data.open_split('mnist', split, data_dir=data_dir, in_memory=True)
  test = data.open_split('mnist', 'test', data_dir=data_dir, in_memory=True)
  return data_dir, train, test


def _restore(workdir: str) -> tuple[Any, dict[str, Any]]:
  model, config = checkpoint.restore_model(workdir)
  dataset = config.get('dataset', 'mnist')
  if dataset != 'mnist':
    raise ValueError(f'{workdir} is a {dataset} run; this experiment is on MNIST')
  return model, config


def run(args: argparse.Namespace) -> dict[str, str]:
  """Runs the experiment for parsed ``args``; returns the written files."""
  if bool(args.baseline_workdir) != bool(args.bort_workdir):
    raise ValueError('give both --baseline-workdir and --bort-workdir, or neither')
  t0 = time.perf_counter()
  runtime: dict[str, float] = {}
  args.data_dir, train, test = _load_mnist(args)
  spec = test.spec
  norm = experiment.Normalization(tuple(spec.mean), tuple(spec.std))
  runtime['data'] = time.perf_counter() - t0
  test_images = norm.from_pixels(jnp.asarray(test.images, jnp.float32) / 255.0)
  test_labels = jnp.asarray(test.labels)
  n_eval = min(args.eval_examples, len(test_labels))
  # The analysed examples are the first of the test set; accuracy uses the
  # first n_eval.
  means = experiment.class_means(
      np.asarray(train.images, np.float32) / 255.0, np.asarray(train.labels),
      spec.num_classes)

  if args.baseline_workdir:
    runs = {None: {'baseline': args.baseline_workdir, 'bort': args.bort_workdir}}
  else:
    workdir = Path(args.workdir or Path(args.out) / 'runs')
    runs, train_runtime = train_pairs(args, workdir)
    runtime.update(train_runtime)
  start = time.perf_counter()
  pairs: dict[str, dict[str, Any]] = {}
  infos: dict[str, dict[str, dict[str, Any]]] = {}
  for pair in runs.values():
    for role, run_dir in pair.items():
      model, config = _restore(run_dir)
      arch = config['model']
      record = loop.last_evaluation(run_dir)
      pairs.setdefault(arch, {})[role] = model
      infos.setdefault(arch, {})[role] = {
          'workdir': run_dir, 'optimizer': config['optimizer'],
          'gamma': config['gamma'] if config['optimizer'].startswith('bort') else None,
          'epochs': config['epochs'], 'train_seconds': record.get('elapsed'),
          'config': config}
  if args.baseline_workdir and len(pairs) != 1:
    raise ValueError(f'the two runs train different models: {sorted(pairs)}')
  runtime['restore'] = time.perf_counter() - start

  analysis = experiment.AnalysisConfig(
      num_examples=args.num_examples, num_figure_examples=args.figure_examples,
      sat_k=args.sat_k, ig_steps=args.ig_steps, deletion_steps=args.deletion_steps,
      inversion_steps=args.inversion_steps,
      num_inversion_examples=args.inversion_examples,
      pgd_steps=args.pgd_steps, seed=args.seed)
  architectures, arrays_by_arch = {}, {}
  for arch, models in pairs.items():
    start = time.perf_counter()
    for name, model in models.items():
      infos[arch][name]['test_accuracy'] = experiment.evaluate_accuracy(
          model, test_images[:n_eval], test_labels[:n_eval])
      _log(f'{arch} {name}: test accuracy '
           f'{infos[arch][name]["test_accuracy"]:.4f} ({n_eval} examples)')
    results, arrays = experiment.analyse(
        models, test_images, test_labels, means, norm, analysis, log=_log)
    architectures[arch] = {'models': infos[arch], 'results': results}
    arrays_by_arch[arch] = arrays
    runtime[f'analyse_{arch}'] = time.perf_counter() - start
  runtime['total'] = time.perf_counter() - t0
  settings = {
      'source': ('work dirs' if args.baseline_workdir else
                 'trained here by bort_jax.training.loop.train_and_evaluate')
                + ' (training settings: see each run\'s config in report.json)',
      'work_dirs': {arch: {role: info['workdir'] for role, info in roles.items()}
                    for arch, roles in infos.items()},
      'accuracy_examples': n_eval,
      'analysed_examples': min(args.num_examples, len(test_labels)),
      'inversion': (f'{args.inversion_steps} Adam steps on '
                    f'{args.inversion_examples} examples'),
      'sat': f'k={args.sat_k or "min(256, channels)"}, B=1000, tau=3',
      'pgd_steps': args.pgd_steps, 'seed': args.seed,
  }
  notes = [
      'Reconstruction uses the default `auto` scaling of the layer inverses: the '
      'paper\'s per-unit 1/||w||^2 for layers with at most as many units as inputs, '
      'and the single factor ||W||_F^2/min(units, fan_in) for overcomplete layers '
      '(the first 3x3 conv: 9 inputs, 32 units), where Bort makes the columns, not '
      'the rows, orthonormal. Both are the pseudo-inverse under the Bort constraint '
      '(docs/method.md). The `row` numbers use the paper\'s scaling in every layer.',
      'Pixel metrics are on unclipped reconstructions mapped back to pixel units '
      '[0, 1].',
      'Our adversarial procedure is our own design (the paper does not publish one).',
      *args.note,
  ]
  full_report = {'settings': settings, 'runtime_seconds': runtime, 'notes': notes,
                 'architectures': architectures}
  written = report.write_report(full_report, arrays_by_arch, args.out)
  _log(f'report written to {written["markdown"]} ({runtime["total"]:.0f} s)')
  return written


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of ``bort-explain``; returns the exit status."""
  args = build_parser().parse_args(argv)
  try:
    run(args)
  except (ValueError, FileNotFoundError, FileExistsError) as error:
    print(f'bort-explain: error: {error}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
