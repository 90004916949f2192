"""``bort-explain``: the MNIST explainability experiment, baseline vs Bort.

Either analyses two trained runs (``--baseline-workdir`` and
``--bort-workdir``, work directories of ``bort-train``, restored with
:func:`bort_jax.training.checkpoint.restore_model`), or trains them itself:
the ``InvertibleCNN`` (and, unless ``--no-mlp``, the MLP) on MNIST with
``optax.adamw`` and with ``bort_jax.bort_adamw`` (same learning rate, schedule
and weight decay). Then it measures reconstruction, saliency and adversarial
samples (:mod:`bort_jax.explain.experiment`) and writes ``report.json``, PNG
figures and ``report.md`` into ``--out`` (:mod:`bort_jax.explain.report`).

MNIST comes from a tfds data dir (``--data-dir``, default
``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``); if it is not prepared there,
it is built from the IDX files in ``--idx-dir`` (default
``../shared/data/mnist`` relative to the repository root) with
:func:`bort_jax.data.prepare_mnist`.

Example::

  bort-explain --out reports/explain_mnist            # trains, ~8 min on 2 CPUs
  bort-explain --baseline-workdir runs/cnn_adamw --bort-workdir runs/cnn_bort \\
      --out reports/explain_runs
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

__all__ = ['build_parser', 'main', 'run']

_REPO_ROOT = Path(__file__).resolve().parents[2]


def _channels(text: str) -> tuple[int, ...]:
  try:
    channels = tuple(int(c) for c in text.split(','))
  except ValueError:
    raise argparse.ArgumentTypeError(f'expected comma-separated ints, got {text!r}') from None
  if not channels or min(channels) < 1:
    raise argparse.ArgumentTypeError(f'channels must be positive, got {text!r}')
  return channels


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser of ``bort-explain``."""
  p = argparse.ArgumentParser(
    prog='bort-explain',
    description='Bort explainability experiment on MNIST: reconstruction, backtracking '
                'saliency and explainable adversarial samples, baseline (AdamW) vs Bort.')
  p.add_argument('--baseline-workdir', help='bort-train work dir of the baseline run')
  p.add_argument('--bort-workdir', help='bort-train work dir of the Bort run')
  p.add_argument('--out', default='explain_report', help='report folder (default %(default)s)')
  p.add_argument('--data-dir', default=None, help='tfds data dir (default $TFDS_DATA_DIR)')
  p.add_argument('--note', action='append', default=[],
                 help='a line added to the notes of report.md (repeatable)')
  p.add_argument('--idx-dir', default=None,
                 help='MNIST IDX files, used if the data dir is not prepared '
                      '(default ../shared/data/mnist from the repository root)')
  train = p.add_argument_group('training (when no work dirs are given)')
  train.add_argument('--steps', type=int, default=1200, help='CNN optimizer steps')
  train.add_argument('--mlp-steps', type=int, default=600, help='MLP optimizer steps')
  train.add_argument('--no-mlp', action='store_true', help='skip the MLP pair')
  train.add_argument('--batch-size', type=int, default=128)
  train.add_argument('--learning-rate', type=float, default=1e-3)
  train.add_argument('--weight-decay', type=float, default=1e-4)
  train.add_argument('--gamma', type=float, default=10.0, help='Bort coefficient')
  train.add_argument('--channels', type=_channels, default=(32, 64),
                     help='InvertibleCNN channels per stage (default 32,64)')
  train.add_argument('--mlp-hidden', type=_channels, default=(256,),
                     help='MLP hidden widths (default 256)')
  train.add_argument('--train-examples', type=int, default=0,
                     help='train on the first N training examples (0: all 60000)')
  train.add_argument('--seed', type=int, default=0)
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


def _load_mnist(args: argparse.Namespace):
  from bort_jax import data  # pylint: disable=import-outside-toplevel

  data_dir = data.resolve_data_dir(args.data_dir)
  try:
    data.prepare_builder('mnist', data_dir=data_dir)
  except data.DatasetNotFoundError:
    idx_dir = args.idx_dir or os.fspath(_REPO_ROOT.parent / 'shared' / 'data' / 'mnist')
    _log(f'preparing MNIST in {data_dir} from {idx_dir}')
    data.prepare_mnist(idx_dir, data_dir)
  split = f'train[:{args.train_examples}]' if args.train_examples else 'train'
  train = data.open_split('mnist', split, data_dir=data_dir, in_memory=True)
  test = data.open_split('mnist', 'test', data_dir=data_dir, in_memory=True)
  return train, test


def _restore(workdir: str) -> tuple[Any, dict[str, Any]]:
  from bort_jax.training.checkpoint import restore_model  # pylint: disable=import-outside-toplevel

  model, config = restore_model(workdir)
  config = dict(config) if isinstance(config, dict) else dict(vars(config))
  dataset = config.get('dataset', 'mnist')
  if dataset != 'mnist':
    raise ValueError(f'{workdir} is a {dataset} run; this experiment is on MNIST')
  return model, config


def run(args: argparse.Namespace) -> dict[str, str]:
  """Runs the experiment for parsed ``args``; returns the written files."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from bort_jax.explain import experiment, report  # pylint: disable=import-outside-toplevel

  if bool(args.baseline_workdir) != bool(args.bort_workdir):
    raise ValueError('give both --baseline-workdir and --bort-workdir, or neither')
  t0 = time.perf_counter()
  runtime: dict[str, float] = {}
  train, test = _load_mnist(args)
  spec = test.spec
  norm = experiment.Normalization(tuple(spec.mean), tuple(spec.std))
  runtime['data'] = time.perf_counter() - t0
  test_images = norm.from_pixels(jnp.asarray(test.images, jnp.float32) / 255.0)
  test_labels = jnp.asarray(test.labels)
  n_eval = min(args.eval_examples, len(test_labels))
  # The analysed examples are the first of the test set; accuracy uses the
  # first n_eval.
  means = experiment.class_means(
    np.asarray(train.images, np.float32) / 255.0, np.asarray(train.labels), spec.num_classes)

  pairs: dict[str, dict[str, Any]] = {}
  infos: dict[str, dict[str, dict[str, Any]]] = {}
  if args.baseline_workdir:
    for name, workdir in (('baseline', args.baseline_workdir), ('bort', args.bort_workdir)):
      model, config = _restore(workdir)
      arch = config.get('model', type(model).__name__)
      pairs.setdefault(arch, {})[name] = model
      optimizer = str(config.get('optimizer'))
      infos.setdefault(arch, {})[name] = {
        'workdir': workdir, 'optimizer': optimizer,
        'gamma': config.get('gamma') if optimizer.startswith('bort') else None,
        'epochs': config.get('epochs'), 'config': config}
    if len(pairs) != 1:
      raise ValueError(f'the two runs train different models: {sorted(pairs)}')
    runtime['restore'] = time.perf_counter() - t0 - runtime['data']
  else:
    jobs = [('invertible_cnn', args.steps, (('channels', tuple(args.channels)),))]
    if not args.no_mlp:
      jobs.append(('mlp', args.mlp_steps, (('hidden_features', tuple(args.mlp_hidden)),)))
    for arch, steps, kwargs in jobs:
      start = time.perf_counter()
      for name, optimizer in (('baseline', 'adamw'), ('bort', 'bort_adamw')):
        config = experiment.TrainConfig(
          model=arch, optimizer=optimizer, steps=steps, batch_size=args.batch_size,
          learning_rate=args.learning_rate, weight_decay=args.weight_decay,
          gamma=args.gamma, seed=args.seed, model_kwargs=kwargs)
        _log(f'training {arch} with {optimizer} for {steps} steps')
        model, info = experiment.train_classifier(config, train, log=_log)
        pairs.setdefault(arch, {})[name] = model
        infos.setdefault(arch, {})[name] = {
          'optimizer': optimizer, 'gamma': args.gamma if optimizer == 'bort_adamw' else None,
          'steps': steps, **info}
      runtime[f'train_{arch}'] = time.perf_counter() - start

  analysis = experiment.AnalysisConfig(
    num_examples=args.num_examples, num_figure_examples=args.figure_examples,
    sat_k=args.sat_k, ig_steps=args.ig_steps, deletion_steps=args.deletion_steps,
    inversion_steps=args.inversion_steps, num_inversion_examples=args.inversion_examples,
    pgd_steps=args.pgd_steps, seed=args.seed)
  architectures, arrays_by_arch = {}, {}
  for arch, models in pairs.items():
    start = time.perf_counter()
    for name, model in models.items():
      infos[arch][name]['test_accuracy'] = experiment.evaluate_accuracy(
        model, test_images[:n_eval], test_labels[:n_eval])
      _log(f'{arch} {name}: test accuracy {infos[arch][name]["test_accuracy"]:.4f} '
           f'({n_eval} examples)')
    results, arrays = experiment.analyse(
      models, test_images, test_labels, means, norm, analysis, log=_log)
    architectures[arch] = {'models': infos[arch], 'results': results}
    arrays_by_arch[arch] = arrays
    runtime[f'analyse_{arch}'] = time.perf_counter() - start
  runtime['total'] = time.perf_counter() - t0
  analysis_settings = {
    'accuracy_examples': n_eval,
    'analysed_examples': min(args.num_examples, len(test_labels)),
    'inversion': f'{args.inversion_steps} Adam steps on {args.inversion_examples} examples',
    'sat': f'k={args.sat_k or "min(256, channels)"}, B=1000, tau=3',
    'pgd_steps': args.pgd_steps, 'seed': args.seed,
  }
  if args.baseline_workdir:
    settings = {'source': 'work dirs (training settings: see each run\'s config in '
                          'report.json)',
                'baseline_workdir': args.baseline_workdir, 'bort_workdir': args.bort_workdir,
                **analysis_settings}
  else:
    settings = {
      'source': 'trained here', 'steps_cnn': args.steps,
      'steps_mlp': None if args.no_mlp else args.mlp_steps,
      'batch_size': args.batch_size, 'learning_rate': args.learning_rate,
      'schedule': 'cosine decay to 0, 5% linear warm-up',
      'weight_decay': args.weight_decay, 'gamma': args.gamma,
      'cnn_channels': list(args.channels), 'mlp_hidden': list(args.mlp_hidden),
      'train_examples': len(train), **analysis_settings,
    }
  notes = [
    'Reconstruction uses the default `auto` scaling of the layer inverses: the paper\'s '
    'per-unit 1/||w||^2 for layers with at most as many units as inputs, and the single '
    'factor ||W||_F^2/min(units, fan_in) for overcomplete layers (the first 3x3 conv: 9 '
    'inputs, 32 units), where Bort makes the columns, not the rows, orthonormal. Both '
    'are the pseudo-inverse under the Bort constraint. The `row` numbers use the paper\'s '
    'scaling in every layer.',
    'Pixel metrics are on unclipped reconstructions mapped back to pixel units [0, 1].',
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
  except (ValueError, FileNotFoundError) as e:
    print(f'bort-explain: error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
