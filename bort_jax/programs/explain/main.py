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
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from bort_jax import configs, data
from bort_jax.data import mnist_idx
from bort_jax.programs import common
from bort_jax.programs.common import IDX_DIR_ENV
from bort_jax.programs.explain import experiment, measure, protocol, report
from bort_jax.training import checkpoint, errors, modeling, numerics
from bort_jax.training import workdir as workdir_lib
from bort_jax.programs.explain import analysis
from bort_jax.programs.explain import args as explain_args
from bort_jax.programs.explain.args import DEFAULT_EPOCHS
from bort_jax.programs.explain.args import DEFAULT_TRAIN_EXAMPLES

__all__ = [
    'DEFAULT_EPOCHS',
    'DEFAULT_TRAIN_EXAMPLES',
    'build_parser',
    'main',
    'run',
    'training_configs',
]


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser of ``bort-explain``."""
  p = argparse.ArgumentParser(
      prog='bort-explain',
      description='Bort explainability protocol on MNIST: reconstruction, '
      'saliency with a sanity check and adversarial samples, '
      'baseline (AdamW) vs Bort over several seeds.',
  )
  explain_args.add_output_arguments(p, idx_dir_env=IDX_DIR_ENV)
  explain_args.add_run_arguments(p)
  explain_args.add_analysis_arguments(p)
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


def _measurement_data(train: Any, test: Any) -> analysis.MeasurementData:
  """The normalised test set and the class means of the training set."""
  spec = test.spec
  norm = experiment.Normalization(tuple(spec.mean), tuple(spec.std))
  return analysis.MeasurementData(
      images=norm.from_pixels(jnp.asarray(test.images, jnp.float32) / 255.0),
      labels=jnp.asarray(test.labels),
      means=experiment.class_means(
          np.asarray(train.images, np.float32) / 255.0,
          np.asarray(train.labels),
          spec.num_classes,
      ),
      norm=norm,
  )


def _restore(run_dir: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
  """A finished run's model (final checkpoint), config and final record."""
  record = protocol.final_evaluation(run_dir)
  model, config = checkpoint.restore_model(run_dir, step=record['step'])
  numerics.check_finite_params(model, what=f'the model in {run_dir}')
  dataset = config.get('dataset', 'mnist')
  if dataset != 'mnist':
    raise ValueError(
        f'{run_dir} is a {dataset} run; this experiment is on MNIST'
    )
  return model, config, record


def _restore_architecture(
    arch: str, by_seed: dict[int, dict[str, str]]
) -> tuple[dict[int, dict[str, analysis.RestoredRun]], dict[int, Any]]:
  """Every run of one architecture, and per seed the untrained model.

  Returns:
    ``({seed: {role: run}}, {seed: the architecture at its initialisation})``.
  """
  runs, untrained = {}, {}
  for seed in sorted(by_seed):
    runs[seed] = {}
    for role, run_dir in by_seed[seed].items():
      model, run_config, record = _restore(run_dir)
      if run_config['model'] != arch:
        raise ValueError(f'{run_dir} trains {run_config["model"]}, not {arch}')
      if seed not in untrained:
        # The same architecture at its initialisation (config.seed).
        untrained[seed] = modeling.model_from_config(
            configs.from_dict(run_config)
        )
      runs[seed][role] = analysis.RestoredRun(
          run_dir, model, run_config, record
      )
  return runs, untrained


def _locate_runs(args: argparse.Namespace) -> dict[str, Any]:
  """The two given runs, or the protocol's runs, trained where missing.

  Returns:
    ``{architecture: {seed: {role: run directory}}}``.
  """
  if args.baseline_workdir:
    _, base_config, _ = _restore(args.baseline_workdir)
    return {
        base_config['model']: {
            0: {'baseline': args.baseline_workdir, 'bort': args.bort_workdir}
        }
    }
  workdir = Path(args.workdir or Path(args.out) / 'runs')
  return protocol.train_runs(
      training_configs(args), workdir, data_dir=args.data_dir, log=_log
  )


def run(args: argparse.Namespace) -> dict[str, str]:
  """Runs the protocol for parsed ``args``; returns the written files."""
  if bool(args.baseline_workdir) != bool(args.bort_workdir):
    raise ValueError(
        'give both --baseline-workdir and --bort-workdir, or neither'
    )
  workdir_lib.check_output_dir(args.out)
  t0 = time.perf_counter()
  args.data_dir, train, test = _load_mnist(args)
  examples = _measurement_data(train, test)
  runtime: dict[str, Any] = {'data': time.perf_counter() - t0}
  start = time.perf_counter()
  runs = _locate_runs(args)
  runtime['train_or_read_back_this_call'] = time.perf_counter() - start
  runtime.update(analysis.recorded_training(runs))
  config = measure.MeasureConfig(**explain_args.analysis_settings(args))
  architectures, arrays_by_arch = {}, {}
  for arch, by_seed in runs.items():
    start = time.perf_counter()
    restored, untrained = _restore_architecture(arch, by_seed)
    architectures[arch], arrays_by_arch[arch] = analysis.analyse_architecture(
        arch, restored, untrained, examples, config, log=_log
    )
    runtime[f'analysis_{arch}'] = time.perf_counter() - start
  runtime['this_command_total'] = time.perf_counter() - t0
  full_report = {
      'settings': analysis.settings(runs, config, examples.norm),
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
