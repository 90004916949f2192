"""``bort-train``: train a config, or compare optimizers on it.

A config is a packaged recipe (``--config NAME``, see
:data:`bort_jax.configs.CONFIG_NAMES`) or any Python file with a
``get_config()`` returning an ``ml_collections.ConfigDict``
(``--config path/to/file.py``, best started from
:func:`bort_jax.configs.base.get_config`). Any field is overridden with
``--config.FIELD=VALUE`` (``ml_collections.config_flags``), or with its
alias ``--set FIELD=VALUE``; the common ones also have flags of their own.
Later overrides win.

Examples::

  # MNIST CNN with AdamW and with BortA, test accuracy and orthogonality side by side
  bort-train --config mnist_cnn --compare adamw,bort_adamw --workdir runs/mnist_cnn \\
      --data-dir ~/tensorflow_datasets

  # one run, with overrides; then continue it after an interruption
  bort-train --config cifar10_resnet18 --optimizer sgd --epochs 50 --workdir runs/c10 \\
      --config.nesterov=false --config.model_kwargs='{"width": 32}'
  bort-train --workdir runs/c10 --resume
  # start that work directory over (a rerun without --resume is refused)
  bort-train --config cifar10_resnet18 --workdir runs/c10 --overwrite

  # two hosts (run on each, with its --process-id)
  bort-train --config imagenet_resnet50 --workdir /nfs/runs/r50 --data-dir /nfs/tfds \\
      --coordinator-address 10.0.0.1:1234 --num-processes 2 --process-id 0

MNIST is prepared from its four IDX files when ``--data-dir`` lacks it and
``--mnist-idx-dir`` (default ``$BORT_MNIST_IDX_DIR``) names their folder;
``--download`` lets tfds fetch a missing data set instead (needs internet).

A work directory belongs to one run: a second ``bort-train`` in it fails at
once naming the first (pid, host); one holding another run is refused
unless ``--resume`` (same config) or ``--overwrite``. Errors are messages
(``bort-train: error: ...``), exit status 2 for a config or argument no run
can use and 1 for a run that cannot go on (a non-finite loss or
evaluation, no usable checkpoint, a checkpoint that cannot be written, a
work directory in use); SIGINT/SIGTERM save a checkpoint and exit with
130/143 (during the start-up: nothing written). A checkpoint without its
record in ``checkpoint_records/`` cannot be verified and is resumed only
with ``--allow-unverified-checkpoint``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import ml_collections

from bort_jax import configs, data
from bort_jax.programs import common, train_runs
from bort_jax.training import checkpoint, errors, interrupt, parallel

PROGRAM = 'bort-train'

#: (flag, type, help) of the flags that set a field (``--epochs``: ``epochs``).
FIELD_FLAGS = (
    ('--optimizer', str, 'optimizer name (see below)'),
    ('--epochs', int, None),
    ('--batch-size', int, 'global batch size'),
    ('--learning-rate', float, None),
    ('--gamma', float, 'Bort coefficient'),
    ('--seed', int, None),
)


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser (``--config.FIELD`` overrides are parsed apart)."""
  parser = argparse.ArgumentParser(
      prog=PROGRAM,
      description=__doc__.split('\n', 1)[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=f'configs: {", ".join(configs.CONFIG_NAMES)}\n'
      f'optimizers: {", ".join(configs.OPTIMIZER_NAMES)}\n'
      'config fields (--config.FIELD=VALUE or --set FIELD=VALUE): '
      f'{", ".join(configs.field_names())}',
  )
  add = parser.add_argument
  add(
      '--config',
      help='a packaged config NAME (see below) or path/to/config.py '
      '(default with --resume: WORKDIR/config.json)',
  )
  add(
      '--workdir',
      required=True,
      help='run directory: config.json, checkpoints/, metrics.jsonl',
  )
  for flag, kind, text in FIELD_FLAGS:
    add(flag, type=kind, help=text)
  add(
      '--set',
      action='append',
      default=[],
      metavar='FIELD=VALUE',
      help='override a config field: an alias of --config.FIELD=VALUE '
      '(repeatable)',
  )
  add(
      '--compare',
      metavar='OPT1,OPT2,...',
      help='train once per optimizer (in WORKDIR/<optimizer>) and print '
      'test accuracy and orthogonality side by side',
  )
  add(
      '--resume',
      action='store_true',
      help='continue from the latest checkpoint in the work directory '
      '(same config; records after that checkpoint are dropped)',
  )
  add(
      '--allow-unverified-checkpoint',
      action='store_true',
      help='with --resume: accept a checkpoint that has no record in '
      'checkpoint_records/ to verify it by (otherwise it is refused)',
  )
  add(
      '--overwrite',
      action='store_true',
      help='discard a previous run in the work directory (its config.json, '
      'checkpoints and metrics.jsonl) and start again',
  )
  add(
      '--max-steps',
      type=int,
      help='stop (with a checkpoint) at this global step; --resume continues',
  )
  add(
      '--data-dir',
      help='tfds data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)',
  )
  add(
      '--download',
      action='store_true',
      help='let tfds download and prepare a missing data set (needs internet)',
  )
  add(
      '--mnist-idx-dir',
      help='MNIST IDX files to prepare MNIST from when the data dir lacks it '
      f'(default: ${common.IDX_DIR_ENV})',
  )
  add('--no-progress', action='store_true', help='no progress bar')
  distributed = parser.add_argument_group(
      'multi-host (jax.distributed.initialize)'
  )
  distributed.add_argument(
      '--coordinator-address', help='host:port of process 0'
  )
  distributed.add_argument('--num-processes', type=int)
  distributed.add_argument('--process-id', type=int)
  return parser


def resolve_config(
    args: argparse.Namespace, workdir: Path, extra: Sequence[str] = ()
) -> ml_collections.ConfigDict:
  """The config (named, a file, or ``workdir``'s), validated, set by
  :data:`FIELD_FLAGS`, ``--set``, then ``extra`` (``--config.FIELD=VALUE``),
  later ones winning; with ``--compare``, its first optimizer.

  Raises:
    ValueError, FileNotFoundError: with a message for ``parser.error``.
  """
  overrides = configs.assignments_to_overrides(args.set) + list(extra)
  configs.check_options(overrides)
  source = configs.config_source(args.config) if args.config else None
  configs.check_override_fields(overrides)
  if source:
    config = configs.load(source)
  elif args.resume:
    config = checkpoint.load_config(workdir)
  else:
    raise ValueError(
        f'--config is required; valid configs: {list(configs.CONFIG_NAMES)} '
        'or a path/to/config.py'
    )
  fields = [flag[2:].replace('-', '_') for flag, _, _ in FIELD_FLAGS]
  values = {f: getattr(args, f) for f in fields if getattr(args, f) is not None}
  config = configs.apply_overrides(
      configs.set_values(config, values), overrides
  )
  if args.compare:
    config = configs.set_values(
        config, {'optimizer': train_runs.parse_compare(args.compare)[0]}
    )
  return configs.validate(config)


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of ``bort-train``; returns the exit status (see above)."""
  with interrupt.InterruptWatcher() as startup:
    return _main(argv, startup)


def _main(
    argv: Sequence[str] | None, startup: interrupt.InterruptWatcher
) -> int:
  """:func:`main`, with the signals of the start-up recorded by ``startup``."""
  parser = build_parser()
  args, extra = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
  common.report_library_warnings(PROGRAM)
  common.quiet_tfds_off_terminal()
  if args.mnist_idx_dir is None:
    args.mnist_idx_dir = os.environ.get(common.IDX_DIR_ENV) or None
  try:
    train_runs.check_arguments(
        args.workdir, args.max_steps, args.resume, args.overwrite
    )
  except errors.ConfigError as error:
    parser.error(str(error))
  distributed = (args.coordinator_address, args.num_processes, args.process_id)
  if any(distributed[:2]) or args.process_id is not None:
    parallel.initialize_distributed(*distributed)
  workdir = Path(args.workdir)
  try:
    config = resolve_config(args, workdir, extra)
    runs = train_runs.run_configs(config, args.compare)
  except (ValueError, FileNotFoundError) as error:
    parser.error(str(error))
  try:
    train_runs.prepare_data(
        config, workdir, args.data_dir, args.mnist_idx_dir, args.download
    )
    rows = train_runs.train_runs(
        runs,
        workdir,
        startup,
        compare=bool(args.compare),
        data_dir=args.data_dir,
        download=args.download,
        resume=args.resume,
        overwrite=args.overwrite,
        allow_unverified=args.allow_unverified_checkpoint,
        max_steps=args.max_steps,
        progress=not args.no_progress,
    )
  except (errors.BortError, data.DatasetNotFoundError, OSError) as error:
    return common.report_error(PROGRAM, error, 1)
  except ValueError as error:
    return common.report_error(PROGRAM, error, 2)
  print(train_runs.summary(config, workdir, rows))
  return 0


if __name__ == '__main__':
  sys.exit(main())
