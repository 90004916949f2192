"""``bort-explain``: the MNIST explainability protocol, baseline vs Bort.

For each architecture (``--models``; default the Bort-invertible CNN
``bort_invertible_cnn``, the older ``invertible_cnn`` and the ``mlp``) and
each seed (``--seeds``, default 0,1,2) it trains, or reads back, a baseline
(``adamw``, gamma 0) and a Bort run (``bort_adamw``) with the library loop
(:func:`bort_jax.training.loop.train_and_evaluate`, the loop of
``bort-train``) into ``WORKDIR/<config>/seed<k>/<optimizer>``
(:mod:`bort_jax.programs.explain.protocol`). Finished runs with the same
config are read back, not retrained. Then it measures reconstruction,
saliency (with the model-randomisation sanity check) and adversarial
samples on every model (:mod:`bort_jax.programs.explain.measure`),
aggregates the seeds (mean and 95% Student-t interval), checks the protocol's
acceptance criteria, and writes ``report.json``, ``report.md`` and the
figures into ``--out`` (:mod:`bort_jax.programs.explain.report`). It fails
with a non-zero exit, writing nothing, if any reported metric is NaN.

The default training budget fits two CPU cores in under an hour, analysis
included: every model trains 2 epochs on all 60000 training examples, and
accuracy is measured on the whole test set (10000). The Bort runs of every
architecture use the gamma of the preset recipe ``mnist_invertible_cnn``
(:data:`bort_jax.programs.explain.protocol.GAMMA_RECIPE`).

MNIST comes from a tfds data dir (``--data-dir``, default
``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``); if it is not prepared
there, it is built from the IDX files in ``--idx-dir`` (default
``$BORT_MNIST_IDX_DIR``).

Example::

  bort-explain --out reports/explain --workdir runs/explain_protocol
  bort-explain --models bort_invertible_cnn --seeds 0 --out reports/one
  bort-explain --baseline-workdir runs/a/adamw \\
      --bort-workdir runs/a/bort_adamw --out reports/pair
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bort_jax import configs, data
from bort_jax.data import mnist_idx
from bort_jax.programs import common
from bort_jax.programs.common import IDX_DIR_ENV
from bort_jax.programs.explain import experiment, measure, protocol, report
from bort_jax.training import checkpoint, errors, modeling, numerics
from bort_jax.training import workdir as workdir_lib

__all__ = [
    'DEFAULT_EPOCHS',
    'DEFAULT_TRAIN_EXAMPLES',
    'build_parser',
    'main',
    'run',
    'training_configs',
]

#: Epochs per architecture of the default (two-CPU) budget.
DEFAULT_EPOCHS = {'bort_invertible_cnn': 2, 'invertible_cnn': 2, 'mlp': 2}
#: Training examples per architecture of the default budget (0: all).
DEFAULT_TRAIN_EXAMPLES = {
    'bort_invertible_cnn': 0,
    'invertible_cnn': 0,
    'mlp': 0,
}


def _names(text: str) -> list[str]:
  names = [n.strip() for n in text.split(',') if n.strip()]
  unknown = [n for n in names if n not in protocol.ARCHITECTURE_CONFIGS]
  if not names or unknown:
    raise argparse.ArgumentTypeError(
        f'unknown model(s) {unknown or text!r}; valid: '
        f'{",".join(protocol.ARCHITECTURE_CONFIGS)}'
    )
  return names


def _seeds(text: str) -> list[int]:
  try:
    seeds = [int(s) for s in text.split(',')]
  except ValueError:
    raise argparse.ArgumentTypeError(
        f'expected comma-separated ints, got {text!r}'
    ) from None
  if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
    raise argparse.ArgumentTypeError(
        f'seeds must be distinct and non-negative, got {text!r}'
    )
  return seeds


def _at_least(minimum: int):
  """An argparse type: an integer >= ``minimum``."""

  def parse(text: str) -> int:
    try:
      value = int(text)
    except ValueError:
      raise argparse.ArgumentTypeError(
          f'expected an integer, got {text!r}'
      ) from None
    if value < minimum:
      raise argparse.ArgumentTypeError(
          f'must be at least {minimum}, got {value}'
      )
    return value

  return parse


def _finite(*, positive: bool):
  """An argparse type: a finite float, > 0 (``positive``) or >= 0."""

  def parse(text: str) -> float:
    try:
      value = float(text)
    except ValueError:
      raise argparse.ArgumentTypeError(
          f'expected a number, got {text!r}'
      ) from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
      raise argparse.ArgumentTypeError(
          f'must be a finite number {"> 0" if positive else ">= 0"}, '
          f'got {text}'
      )
    return value

  return parse


def _per_model(minimum: int):
  """An argparse type: ``N`` (every model) or ``model=N,model=N``, N >= ``minimum``."""

  def parse(text: str) -> dict[str, int]:
    try:
      if '=' not in text:
        out = {name: int(text) for name in protocol.ARCHITECTURE_CONFIGS}
      else:
        out = {}
        for item in text.split(','):
          name, value = item.split('=')
          if name not in protocol.ARCHITECTURE_CONFIGS:
            raise ValueError(name)
          out[name] = int(value)
    except ValueError:
      raise argparse.ArgumentTypeError(
          f'expected N or model=N,..., got {text!r}'
      ) from None
    low = {name: n for name, n in out.items() if n < minimum}
    if low:
      raise argparse.ArgumentTypeError(
          f'must be at least {minimum}, got {text!r}'
      )
    return out

  return parse


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser of ``bort-explain``."""
  defaults = measure.MeasureConfig()
  p = argparse.ArgumentParser(
      prog='bort-explain',
      description='Bort explainability protocol on MNIST: reconstruction, '
      'saliency with a sanity check and adversarial samples, '
      'baseline (AdamW) vs Bort over several seeds.',
  )
  p.add_argument(
      '--out',
      default='explain_report',
      help='report folder (default %(default)s)',
  )
  p.add_argument(
      '--data-dir', default=None, help='tfds data dir (default $TFDS_DATA_DIR)'
  )
  p.add_argument(
      '--idx-dir',
      default=None,
      help='MNIST IDX files, used if the data dir is not prepared '
      f'(default ${IDX_DIR_ENV})',
  )
  p.add_argument(
      '--note',
      action='append',
      default=[],
      help='a line added to the notes of report.md (repeatable)',
  )
  runs = p.add_argument_group('runs')
  runs.add_argument(
      '--models',
      type=_names,
      default=list(protocol.ARCHITECTURE_CONFIGS),
      help='architectures (default: %(default)s)',
  )
  runs.add_argument(
      '--seeds',
      type=_seeds,
      default=[0, 1, 2],
      help='seeds of the repeats (default 0,1,2)',
  )
  runs.add_argument(
      '--workdir',
      default=None,
      help='where the runs go, WORKDIR/<config>/seed<k>/'
      '<optimizer> (default OUT/runs); finished runs are '
      'read back',
  )
  runs.add_argument(
      '--epochs',
      type=_per_model(1),
      default=None,
      help=f'N or model=N,... (default {DEFAULT_EPOCHS})',
  )
  runs.add_argument(
      '--train-examples',
      type=_per_model(0),
      default=None,
      help='first N training examples, N or model=N,... (0: '
      f'all; default {DEFAULT_TRAIN_EXAMPLES})',
  )
  runs.add_argument(
      '--learning-rate', type=_finite(positive=True), default=2e-3
  )
  runs.add_argument(
      '--weight-decay', type=_finite(positive=False), default=1e-4
  )
  runs.add_argument(
      '--gamma',
      type=_finite(positive=False),
      default=None,
      help='Bort coefficient of every Bort run (default: that of the '
      f'{protocol.GAMMA_RECIPE} recipe)',
  )
  runs.add_argument(
      '--set',
      action='append',
      default=[],
      metavar='FIELD=VALUE',
      help='override a config field of every run (repeatable; '
      'see bort-train)',
  )
  runs.add_argument(
      '--baseline-workdir',
      help='analyse this bort-train run as the baseline (with '
      '--bort-workdir; one seed, nothing is trained)',
  )
  runs.add_argument('--bort-workdir', help='the Bort run to analyse')
  ana = p.add_argument_group(
      'analysis (examples are the first of the test set)'
  )
  ana.add_argument(
      '--reconstruction-examples',
      type=_at_least(1),
      default=defaults.num_reconstruction,
  )
  ana.add_argument(
      '--inversion-examples', type=_at_least(1), default=defaults.num_inversion
  )
  ana.add_argument(
      '--inversion-steps', type=_at_least(1), default=defaults.inversion_steps
  )
  ana.add_argument(
      '--saliency-examples', type=_at_least(1), default=defaults.num_saliency
  )
  ana.add_argument(
      '--sat-k',
      type=_at_least(1),
      default=None,
      help='SAT k (default: min(256, channels))',
  )
  ana.add_argument('--ig-steps', type=_at_least(1), default=defaults.ig_steps)
  ana.add_argument(
      '--deletion-steps', type=_at_least(1), default=defaults.deletion_steps
  )
  ana.add_argument(
      '--adversarial-examples',
      type=_at_least(1),
      default=defaults.num_adversarial,
  )
  ana.add_argument('--pgd-steps', type=_at_least(1), default=defaults.pgd_steps)
  ana.add_argument(
      '--figure-examples',
      type=_at_least(1),
      default=defaults.num_figure_examples,
  )
  return p


def _log(message: str) -> None:
  print(message, flush=True)


def training_configs(args: argparse.Namespace) -> dict[str, Any]:
  """The protocol's configs for parsed ``args``, ``--set`` applied.

  Returns:
    ``{architecture: {seed: {role: config}}}``.
  """
  runs = protocol.protocol_configs(
      args.models,
      args.seeds,
      learning_rate=args.learning_rate,
      weight_decay=args.weight_decay,
      gamma=args.gamma,
      epochs={**DEFAULT_EPOCHS, **(args.epochs or {})},
      train_examples={**DEFAULT_TRAIN_EXAMPLES, **(args.train_examples or {})},
  )
  overrides = configs.assignments_to_overrides(args.set)
  if overrides:
    for by_seed in runs.values():
      for pair in by_seed.values():
        for role, config in pair.items():
          pair[role] = configs.override(config, overrides=overrides)
  return runs


def _load_mnist(args: argparse.Namespace):
  data_dir = data.resolve_data_dir(args.data_dir)
  idx_dir = args.idx_dir or os.environ.get(IDX_DIR_ENV) or None
  if not mnist_idx.ensure_mnist(data_dir, idx_dir):
    _log(f'MNIST is not prepared in {data_dir} and no IDX folder was given')
  train = data.open_split('mnist', 'train', data_dir=data_dir, in_memory=True)
  test = data.open_split('mnist', 'test', data_dir=data_dir, in_memory=True)
  return data_dir, train, test


def _restore(run_dir: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
  """The finished run's model (its final checkpoint), config and final
  evaluation record."""
  record = protocol.final_evaluation(run_dir)
  model, config = checkpoint.restore_model(run_dir, step=record['step'])
  numerics.check_finite_params(model, what=f'the model in {run_dir}')
  dataset = config.get('dataset', 'mnist')
  if dataset != 'mnist':
    raise ValueError(
        f'{run_dir} is a {dataset} run; this experiment is on ' 'MNIST'
    )
  return model, config, record


def _measure_config(args: argparse.Namespace) -> measure.MeasureConfig:
  return measure.MeasureConfig(
      num_reconstruction=args.reconstruction_examples,
      num_inversion=args.inversion_examples,
      inversion_steps=args.inversion_steps,
      num_saliency=args.saliency_examples,
      sat_k=args.sat_k,
      ig_steps=args.ig_steps,
      deletion_steps=args.deletion_steps,
      num_adversarial=args.adversarial_examples,
      pgd_steps=args.pgd_steps,
      num_figure_examples=args.figure_examples,
  )


def _analyse_architecture(
    arch, by_seed, test_images, test_labels, means, norm, config
):
  """Measures every run of one architecture; returns its report entry."""
  seeds = sorted(by_seed)
  models, runs_info, per_seed, arrays, attacks = {}, {}, {}, {}, {}
  for seed in seeds:
    per_seed[seed], runs_info[seed] = {}, {}
    untrained = None
    for role, run_dir in by_seed[seed].items():
      model, run_config, record = _restore(run_dir)
      if run_config['model'] != arch:
        raise ValueError(f'{run_dir} trains {run_config["model"]}, not {arch}')
      if untrained is None:
        # The same architecture at its initialisation (config.seed).
        untrained = modeling.model_from_config(configs.from_dict(run_config))
      models[(seed, role)] = model
      runs_info[seed][role] = {
          'workdir': run_dir,
          'optimizer': run_config['optimizer'],
          'gamma': run_config['gamma'],
          'epochs': run_config['epochs'],
          'train_examples': run_config['train_examples'],
          'batch_size': run_config['batch_size'],
          'bort_exclude': run_config.get('bort_exclude'),
          'train_seconds': record.get('elapsed'),
          'eval_count': record.get('eval_count'),
          'orthogonality': record.get('orthogonality'),
      }
      _log(f'{arch} seed {seed} {role}: measuring')
      results, seed_arrays = measure.measure_model(
          model,
          untrained,
          test_images,
          test_labels,
          means,
          norm,
          config,
          log=_log,
      )
      results['test_accuracy'] = record.get('eval_accuracy')
      per_seed[seed][role] = results
      attacks[(seed, role)] = seed_arrays.pop('adversarial')
      if seed == seeds[0]:
        arrays[role] = seed_arrays
  # Transfer: samples made on one model, classified by an independently
  # trained one (the next seed's model of the same optimizer; with one seed,
  # the other optimizer's model).
  for seed in seeds:
    for role in by_seed[seed]:
      if len(seeds) > 1:
        other_key = (seeds[(seeds.index(seed) + 1) % len(seeds)], role)
      else:
        other_key = (seed, 'bort' if role == 'baseline' else 'baseline')
      sample = attacks[(seed, role)]
      per_seed[seed][role]['adversarial']['transfer'] = {
          'to': f'seed {other_key[0]} {other_key[1]}',
          'success_rate': measure.transfer_success(
              models[other_key], sample['images'], sample['targets']
          ),
      }
  summary = {
      role: protocol.aggregate([per_seed[s][role] for s in seeds])
      for role in ('baseline', 'bort')
  }
  inputs = np.asarray(norm.to_pixels(test_images[: config.num_figure_examples]))
  arrays['inputs'] = inputs
  return {
      'runs': runs_info,
      'per_seed': per_seed,
      'summary': summary,
      'comparisons': report.comparisons(per_seed),
  }, arrays


def run(args: argparse.Namespace) -> dict[str, str]:
  """Runs the protocol for parsed ``args``; returns the written files."""
  if bool(args.baseline_workdir) != bool(args.bort_workdir):
    raise ValueError(
        'give both --baseline-workdir and --bort-workdir, or ' 'neither'
    )
  workdir_lib.check_output_dir(args.out)
  t0 = time.perf_counter()
  args.data_dir, train, test = _load_mnist(args)
  spec = test.spec
  norm = experiment.Normalization(tuple(spec.mean), tuple(spec.std))
  test_images = norm.from_pixels(jnp.asarray(test.images, jnp.float32) / 255.0)
  test_labels = jnp.asarray(test.labels)
  means = experiment.class_means(
      np.asarray(train.images, np.float32) / 255.0,
      np.asarray(train.labels),
      spec.num_classes,
  )
  runtime: dict[str, Any] = {'data': time.perf_counter() - t0}

  start = time.perf_counter()
  if args.baseline_workdir:
    _, base_config, _ = _restore(args.baseline_workdir)
    runs = {
        base_config['model']: {
            0: {'baseline': args.baseline_workdir, 'bort': args.bort_workdir}
        }
    }
  else:
    workdir = Path(args.workdir or Path(args.out) / 'runs')
    runs = protocol.train_runs(
        training_configs(args), workdir, data_dir=args.data_dir, log=_log
    )
  runtime['train_or_read_back_this_call'] = time.perf_counter() - start
  recorded = {}
  for arch, by_seed in runs.items():
    recorded[arch] = sum(
        protocol.final_evaluation(d).get('elapsed', 0.0)
        for pair in by_seed.values()
        for d in pair.values()
    )
  runtime['training_recorded_by_runs'] = recorded
  runtime['training_recorded_total'] = sum(recorded.values())

  config = _measure_config(args)
  architectures, arrays_by_arch = {}, {}
  for arch, by_seed in runs.items():
    start = time.perf_counter()
    architectures[arch], arrays_by_arch[arch] = _analyse_architecture(
        arch, by_seed, test_images, test_labels, means, norm, config
    )
    runtime[f'analysis_{arch}'] = time.perf_counter() - start
  runtime['this_command_total'] = time.perf_counter() - t0
  seeds = sorted({s for by_seed in runs.values() for s in by_seed})
  settings = {
      'models': list(runs),
      'seeds': seeds,
      'work_dirs': "see each architecture's `runs`",
      'analysis': {k: v for k, v in vars(config).items()},
      'normalization': {'mean': list(norm.mean), 'std': list(norm.std)},
      'jax_backend': jax.default_backend(),
  }
  full_report = {
      'settings': settings,
      'runtime_seconds': runtime,
      'notes': list(args.note),
      'architectures': architectures,
      'acceptance': report.acceptance(architectures),
  }
  protocol.check_finite(full_report)
  written = report.write_report(full_report, arrays_by_arch, args.out)
  _log(
      f'report written to {written["markdown"]} '
      f'({runtime["this_command_total"]:.0f} s)'
  )
  return written


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of ``bort-explain``; returns the exit status."""
  args = build_parser().parse_args(argv)
  common.quiet_tfds_off_terminal()
  try:
    run(args)
  except errors.BortError as error:
    print(f'bort-explain: error: {error}', file=sys.stderr)
    return error.exit_code
  except (ValueError, FileNotFoundError, FileExistsError) as error:
    print(f'bort-explain: error: {error}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
