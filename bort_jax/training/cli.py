"""``bort-train``: train a config, or compare optimizers on it.

Examples::

  # MNIST CNN with AdamW and with BortA, test accuracy and orthogonality side by side
  bort-train --config mnist_cnn --compare adamw,bort_adamw --workdir runs/mnist_cnn \\
      --data-dir ~/tensorflow_datasets

  # one run, with overrides; then continue it after an interruption
  bort-train --config cifar10_resnet18 --optimizer sgd --epochs 50 --workdir runs/c10 \\
      --set nesterov=false --set model_kwargs='{"width": 32}'
  bort-train --workdir runs/c10 --resume

  # two hosts (run on each, with its --process-id)
  bort-train --config imagenet_resnet50 --workdir /shared/runs/r50 --data-dir /shared/tfds \\
      --coordinator-address 10.0.0.1:1234 --num-processes 2 --process-id 0

MNIST is prepared automatically from its IDX files when ``--data-dir`` lacks
it and ``--mnist-idx-dir`` (or ``../shared/data/mnist``) holds them;
``--download`` lets tfds fetch a missing data set instead (needs internet).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
from jax.experimental import multihost_utils

from bort_jax import data
from bort_jax.training import checkpoint
from bort_jax.training import config as config_lib
from bort_jax.training import configs
from bort_jax.training import input_pipeline
from bort_jax.training import optimizers
from bort_jax.training import parallel
from bort_jax.training import train

# Named flag -> config field.
FLAG_FIELDS = {
    'optimizer': 'optimizer',
    'epochs': 'epochs',
    'batch_size': 'batch_size',
    'learning_rate': 'learning_rate',
    'gamma': 'gamma',
    'seed': 'seed',
}

COMPARISON_COLUMNS = (
    ('optimizer', 'optimizer', '{}'),
    ('test acc', 'eval_accuracy', '{:.4f}'),
    ('test loss', 'eval_loss', '{:.4f}'),
    ('orth. rel. error', 'orthogonality/relative_error/mean', '{:.4f}'),
    ('mean |cos|', 'orthogonality/mean_abs_cosine/mean', '{:.4f}'),
    ('norm spread', 'orthogonality/norm_spread/mean', '{:.4f}'),
    ('time (s)', 'seconds', '{:.0f}'),
)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='bort-train', description=__doc__.split('\n', 1)[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=f'configs: {", ".join(configs.CONFIG_NAMES)}\n'
             f'optimizers: {", ".join(optimizers.OPTIMIZER_NAMES)}\n'
             f'config fields (--set): {", ".join(config_lib.field_names())}')
  parser.add_argument('--config', help='config name (default with --resume: WORKDIR/config.json)')
  parser.add_argument('--workdir', required=True,
                      help='run directory: config.json, checkpoints/, metrics.jsonl')
  parser.add_argument('--optimizer', help='optimizer name (see below)')
  parser.add_argument('--epochs', type=int)
  parser.add_argument('--batch-size', type=int, help='global batch size')
  parser.add_argument('--learning-rate', type=float)
  parser.add_argument('--gamma', type=float, help='Bort coefficient')
  parser.add_argument('--seed', type=int)
  parser.add_argument('--set', action='append', default=[], metavar='FIELD=VALUE',
                      help='override any config field (repeatable)')
  parser.add_argument('--compare', metavar='OPT1,OPT2,...',
                      help='train once per optimizer (in WORKDIR/<optimizer>) and print '
                           'test accuracy and orthogonality side by side')
  parser.add_argument('--resume', action='store_true',
                      help='continue from the latest checkpoint in the work directory')
  parser.add_argument('--max-steps', type=int,
                      help='stop (with a checkpoint) at this global step; --resume continues')
  parser.add_argument('--data-dir', help='tfds data dir (default: $TFDS_DATA_DIR or '
                                         '~/tensorflow_datasets)')
  parser.add_argument('--download', action='store_true',
                      help='let tfds download and prepare a missing data set (needs internet)')
  parser.add_argument('--mnist-idx-dir',
                      help='MNIST IDX files to prepare MNIST from when the data dir lacks it '
                           '(default: ../shared/data/mnist if present)')
  parser.add_argument('--no-progress', action='store_true', help='no progress bar')
  distributed = parser.add_argument_group('multi-host (jax.distributed.initialize)')
  distributed.add_argument('--coordinator-address', help='host:port of process 0')
  distributed.add_argument('--num-processes', type=int)
  distributed.add_argument('--process-id', type=int)
  return parser


def resolve_config(args: argparse.Namespace, workdir: Path) -> config_lib.TrainConfig:
  """The config: named (or read back from ``workdir``), then flags, then ``--set``."""
  if args.config:
    config = configs.get_config(args.config)
  elif args.resume:
    config = checkpoint.load_config(workdir)
  else:
    raise ValueError(f'--config is required; valid configs: {list(configs.CONFIG_NAMES)}')
  flags = {field: getattr(args, flag) for flag, field in FLAG_FIELDS.items()
           if getattr(args, flag) is not None}
  config = dataclasses.replace(config, **flags)
  config = config_lib.override(config, args.set)
  if args.compare is None:
    optimizers.split_name(config.optimizer)
  return config


def parse_compare(text: str) -> list[str]:
  names = [name.strip() for name in text.split(',') if name.strip()]
  if len(names) < 1:
    raise ValueError('--compare needs optimizer names, e.g. adamw,bort_adamw')
  for name in names:
    optimizers.split_name(name)
  return names


def last_evaluation(workdir: Path) -> dict[str, Any]:
  """The last record of ``WORKDIR/metrics.jsonl`` with eval figures ({} if none)."""
  path = workdir / 'metrics.jsonl'
  records = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
  return next((r for r in reversed(records) if 'eval_accuracy' in r), {})


def comparison_row(optimizer: str, record: dict[str, Any], seconds: float) -> dict[str, Any]:
  """Flattens a final metrics record into :data:`COMPARISON_COLUMNS` keys."""
  row = {'optimizer': optimizer, 'seconds': seconds, **record}
  for figure, value in record.get('orthogonality', {}).items():
    row[f'orthogonality/{figure}'] = value
  return row


def format_comparison(rows: list[dict[str, Any]]) -> str:
  """A plain-text table of :data:`COMPARISON_COLUMNS`, one row per run.

  Example:
    >>> print(format_comparison([{'optimizer': 'adamw', 'eval_accuracy': 0.99}]))
    ... # doctest: +NORMALIZE_WHITESPACE
    optimizer  test acc  test loss  orth. rel. error  mean |cos|  norm spread  time (s)
    adamw      0.9900    -          -                 -           -            -
  """
  table = [[title for title, _, _ in COMPARISON_COLUMNS]]
  for row in rows:
    table.append([fmt.format(row[key]) if row.get(key) is not None else '-'
                  for _, key, fmt in COMPARISON_COLUMNS])
  widths = [max(len(line[i]) for line in table) for i in range(len(COMPARISON_COLUMNS))]
  return '\n'.join('  '.join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                   for line in table)


def prepare_mnist(data_dir: str | None, idx_dir: str | None) -> None:
  """Prepares MNIST from IDX files if missing (process 0; the others wait)."""
  if jax.process_index() == 0:
    input_pipeline.ensure_mnist(data_dir, idx_dir)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('bort-train: mnist prepared')


def main(argv: Sequence[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.coordinator_address or args.num_processes or args.process_id is not None:
    parallel.initialize_distributed(args.coordinator_address, args.num_processes,
                                    args.process_id)
  workdir = Path(args.workdir)
  try:
    config = resolve_config(args, workdir)
    names = parse_compare(args.compare) if args.compare else [config.optimizer]
  except (ValueError, FileNotFoundError) as error:
    parser.error(str(error))

  try:
    if config.dataset == 'mnist':  # local IDX files first; tfds downloads only if still missing
      prepare_mnist(args.data_dir, args.mnist_idx_dir)
    rows = []
    for name in names:
      run_config = dataclasses.replace(config, optimizer=name)
      run_dir = workdir / name if args.compare else workdir
      start = time.perf_counter()
      train.train_and_evaluate(
          run_config, run_dir, data_dir=args.data_dir, download=args.download,
          resume=args.resume, max_steps=args.max_steps, progress=not args.no_progress,
          description=name)
      rows.append(comparison_row(name, last_evaluation(run_dir), time.perf_counter() - start))
  except (data.DatasetNotFoundError, FileExistsError, FileNotFoundError, ValueError) as error:
    print(f'bort-train: error: {error}', file=sys.stderr)
    return 1
  print(f'\n{config.name}: {config.epochs} epochs, batch {config.batch_size}, '
        f'gamma {config.gamma} (bort_* only), work directory {workdir}')
  print(format_comparison(rows))
  return 0


if __name__ == '__main__':
  sys.exit(main())
