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
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
from absl import flags
from jax.experimental import multihost_utils
from ml_collections import config_flags

from bort_jax import configs, data
from bort_jax.data import mnist_idx
from bort_jax.programs import prepare_mnist
from bort_jax.programs.prepare_mnist import IDX_DIR_ENV
from bort_jax.training import (
    checkpoint,
    errors,
    interrupt,
    loop,
    optimizer_factory,
    parallel,
)

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

# A --config.FIELD override: its field is group 2.
_OVERRIDE = re.compile(r'^--?(no)?config\.([^=.]*)')


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser (``--config.FIELD`` overrides are parsed apart)."""
  parser = argparse.ArgumentParser(
      prog='bort-train',
      description=__doc__.split('\n', 1)[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=f'configs: {", ".join(configs.CONFIG_NAMES)}\n'
      f'optimizers: {", ".join(optimizer_factory.OPTIMIZER_NAMES)}\n'
      'config fields (--config.FIELD=VALUE or --set FIELD=VALUE): '
      f'{", ".join(configs.field_names())}',
  )
  parser.add_argument(
      '--config',
      help='a packaged config NAME (see below) or path/to/config.py '
      '(default with --resume: WORKDIR/config.json)',
  )
  parser.add_argument(
      '--workdir',
      required=True,
      help='run directory: config.json, checkpoints/, metrics.jsonl',
  )
  parser.add_argument('--optimizer', help='optimizer name (see below)')
  parser.add_argument('--epochs', type=int)
  parser.add_argument('--batch-size', type=int, help='global batch size')
  parser.add_argument('--learning-rate', type=float)
  parser.add_argument('--gamma', type=float, help='Bort coefficient')
  parser.add_argument('--seed', type=int)
  parser.add_argument(
      '--set',
      action='append',
      default=[],
      metavar='FIELD=VALUE',
      help='override a config field: an alias of --config.FIELD=VALUE '
      '(repeatable)',
  )
  parser.add_argument(
      '--compare',
      metavar='OPT1,OPT2,...',
      help='train once per optimizer (in WORKDIR/<optimizer>) and print '
      'test accuracy and orthogonality side by side',
  )
  parser.add_argument(
      '--resume',
      action='store_true',
      help='continue from the latest checkpoint in the work directory '
      '(same config; records after that checkpoint are dropped)',
  )
  parser.add_argument(
      '--allow-unverified-checkpoint',
      action='store_true',
      help='with --resume: accept a checkpoint that has no record in '
      'checkpoint_records/ to verify it by (otherwise it is refused)',
  )
  parser.add_argument(
      '--overwrite',
      action='store_true',
      help='discard a previous run in the work directory (its config.json, '
      'checkpoints and metrics.jsonl) and start again',
  )
  parser.add_argument(
      '--max-steps',
      type=int,
      help='stop (with a checkpoint) at this global step; --resume continues',
  )
  parser.add_argument(
      '--data-dir',
      help='tfds data dir (default: $TFDS_DATA_DIR or '
      '~/tensorflow_datasets)',
  )
  parser.add_argument(
      '--download',
      action='store_true',
      help='let tfds download and prepare a missing data set (needs internet)',
  )
  parser.add_argument(
      '--mnist-idx-dir',
      help='MNIST IDX files to prepare MNIST from when the data dir lacks it '
      f'(default: ${IDX_DIR_ENV})',
  )
  parser.add_argument(
      '--no-progress', action='store_true', help='no progress bar'
  )
  distributed = parser.add_argument_group(
      'multi-host (jax.distributed.initialize)'
  )
  distributed.add_argument(
      '--coordinator-address', help='host:port of process 0'
  )
  distributed.add_argument('--num-processes', type=int)
  distributed.add_argument('--process-id', type=int)
  return parser


def config_source(name_or_path: str) -> Path:
  """The config file of ``--config``: a packaged recipe's, or the given file.

  Raises:
    ValueError: neither a packaged name nor an existing ``.py`` file.
  """
  path = Path(name_or_path.split(':', 1)[0])
  if name_or_path in configs.CONFIG_NAMES:
    return configs.config_path(name_or_path)
  if path.suffix == '.py':
    if not path.is_file():
      raise ValueError(f'config file {path} not found')
    return Path(name_or_path)
  raise ValueError(
      f'unknown config {name_or_path!r}; valid configs: '
      f'{list(configs.CONFIG_NAMES)} or a path/to/config.py'
  )


def _format(value: Any) -> str:
  return repr(value) if isinstance(value, float) else str(value)


def set_overrides(assignments: Sequence[str]) -> list[str]:
  """``--set FIELD=VALUE`` assignments as ``--config.FIELD=VALUE`` arguments.

  Raises:
    ValueError: an assignment without ``=`` or without a field.
  """
  overrides = []
  for assignment in assignments:
    name, separator, value = assignment.partition('=')
    if not separator or not name.strip():
      raise ValueError(f'--set expects FIELD=VALUE, got {assignment!r}')
    overrides.append(f'--config.{name.strip()}={value.strip()}')
  return overrides


def config_overrides(
    args: argparse.Namespace, extra: Sequence[str]
) -> list[str]:
  """``--config.FIELD=VALUE`` arguments: named flags, then ``--set``, then ``extra``.

  Raises:
    ValueError: a malformed ``--set``, or an argument that is no override.
  """
  overrides = [
      f'--config.{field}={_format(getattr(args, flag))}'
      for flag, field in FLAG_FIELDS.items()
      if getattr(args, flag) is not None
  ]
  overrides += set_overrides(args.set)
  for argument in extra:
    if argument.startswith('-') and not _OVERRIDE.match(argument):
      raise ValueError(f'unrecognized argument {argument!r}')
  return overrides + list(extra)


def parse_config(
    source: Path | ml_collections.ConfigDict, overrides: Sequence[str]
) -> ml_collections.ConfigDict:
  """Loads a config file (or takes a ConfigDict) and applies the overrides.

  Uses ``ml_collections.config_flags`` on a flag set of its own, so it can
  be called more than once in a process.

  Args:
    source: a config file, or a config (read back from a work directory).
    overrides: ``--config.FIELD=VALUE`` arguments (space-separated values
      allowed), later ones winning.

  Returns:
    The validated config.

  Raises:
    ValueError: an override of an unknown field (the message lists the
      valid ones), one that does not parse, or a config that does not
      validate; the message names the field.
  """
  unknown = sorted(
      {
          match.group(2)
          for match in map(_OVERRIDE.match, overrides)
          if match and match.group(2) not in configs.field_names()
      }
  )
  if unknown:
    raise ValueError(
        f'unknown config field(s) {unknown}; valid fields: '
        f'{", ".join(configs.field_names())}'
    )
  flag_values = flags.FlagValues()
  head = (
      []
      if isinstance(source, ml_collections.ConfigDict)
      else [f'--config={source}']
  )
  argv = ['bort-train', *head, *overrides]
  options = dict(
      flag_values=flag_values,
      sys_argv=argv,
      lock_config=False,
      accept_new_attributes=True,
  )
  try:
    if isinstance(source, ml_collections.ConfigDict):
      config_flags.DEFINE_config_dict('config', source, **options)
    else:
      config_flags.DEFINE_config_file('config', **options)
    rest = flag_values(argv)
    config = flag_values.config
  except (flags.Error, AttributeError, KeyError, TypeError) as error:
    raise ValueError(f'bad config override: {error}') from None
  except Exception as error:  # noqa: BLE001  # pylint: disable=broad-exception-caught
    # The user's config file: a syntax error, a failed import, a failing
    # get_config().
    raise ValueError(
        f'config file {source} cannot be loaded: '
        f'{type(error).__name__}: {error}'
    ) from None
  if len(rest) > 1:
    raise ValueError(f'unrecognized arguments {rest[1:]}')
  if not isinstance(config, ml_collections.ConfigDict):
    raise ValueError(f'{source}: get_config() must return a ConfigDict')
  return configs.validate(config)


def resolve_config(
    args: argparse.Namespace, workdir: Path, extra: Sequence[str] = ()
) -> ml_collections.ConfigDict:
  """The config: named, a file, or read back from ``workdir``; then overrides."""
  overrides = config_overrides(args, extra)
  if args.config:
    source = config_source(args.config)
  elif args.resume:
    source = checkpoint.load_config(workdir)
  else:
    raise ValueError(
        f'--config is required; valid configs: {list(configs.CONFIG_NAMES)} '
        'or a path/to/config.py'
    )
  config = parse_config(source, overrides)
  if args.compare is None:
    optimizer_factory.split_name(config.optimizer)
  return config


def parse_compare(text: str) -> list[str]:
  """``'adamw,bort_adamw'`` -> the names, each checked."""
  names = [name.strip() for name in text.split(',') if name.strip()]
  if not names:
    raise ValueError('--compare needs optimizer names, e.g. adamw,bort_adamw')
  for name in names:
    optimizer_factory.split_name(name)
  return names


def comparison_row(
    optimizer: str, record: dict[str, Any], seconds: float
) -> dict[str, Any]:
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
    table.append(
        [
            fmt.format(row[key]) if row.get(key) is not None else '-'
            for _, key, fmt in COMPARISON_COLUMNS
        ]
    )
  widths = [
      max(len(line[i]) for line in table)
      for i in range(len(COMPARISON_COLUMNS))
  ]
  return '\n'.join(
      '  '.join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
      for line in table
  )


def ensure_mnist_prepared(data_dir: str | None, idx_dir: str | None) -> None:
  """Prepares MNIST from IDX files if missing (process 0; the others wait)."""
  if jax.process_index() == 0:
    folder = data.resolve_data_dir(data_dir)
    try:
      mnist_idx.ensure_mnist(folder, idx_dir)
    except (errors.BortError, OSError, ValueError, data.DatasetNotFoundError):
      raise  # messages of their own
    except Exception as error:  # noqa: BLE001  # pylint: disable=broad-exception-caught
      # tfds reading a damaged data set (e.g. a dataset_info.json that is
      # not JSON raises protobuf's ParseError).
      first = (str(error).strip().splitlines() or [''])[0]
      raise errors.ConfigError(
          f'the mnist data in {folder} cannot be read: '
          f'{type(error).__name__}: {first}'
      ) from None
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('bort-train: mnist prepared')


class _NoOrbaxErrors(logging.Filter):
  """Drops orbax's error logs (tracebacks of its save threads): the loop
  reports a failed save as one ``bort-train: error:`` line naming the
  folder."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (
        record.levelno >= logging.ERROR
        and f'{os.sep}orbax{os.sep}' in (record.pathname or '')
    )


class _WarningFormatter(logging.Formatter):

  def format(self, record: logging.LogRecord) -> str:
    return f'bort-train: {record.levelname.lower()}: {record.getMessage()}'


def _report_warnings() -> None:
  """Prints the library's warnings (``bort_jax`` logger: corrupt checkpoints
  skipped, metrics records dropped) on stderr, once per handler."""
  logger = logging.getLogger('bort_jax')
  for handler in [
      h for h in logger.handlers if getattr(h, '_bort_train', False)
  ]:
    logger.removeHandler(handler)
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(_WarningFormatter())
  handler._bort_train = True  # pylint: disable=protected-access
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  logger.propagate = False
  absl_logger = logging.getLogger('absl')
  if not any(isinstance(f, _NoOrbaxErrors) for f in absl_logger.filters):
    absl_logger.addFilter(_NoOrbaxErrors())


def check_arguments(args: argparse.Namespace) -> None:
  """The checks of the arguments that need no config.

  Raises:
    errors.ConfigError: a negative ``--max-steps``, ``--resume`` with
      ``--overwrite``, or a ``--workdir`` that is a file.
  """
  if args.max_steps is not None and args.max_steps < 0:
    raise errors.ConfigError(f'--max-steps must be >= 0, got {args.max_steps}')
  if args.resume and args.overwrite:
    raise errors.ConfigError(
        '--resume and --overwrite exclude each other: --resume continues the run '
        'in the work directory, --overwrite discards it'
    )
  workdir = Path(args.workdir)
  try:
    is_file = workdir.exists() and not workdir.is_dir()
  except OSError as error:  # a name too long, a loop of links...
    raise errors.ConfigError(
        f'--workdir {workdir}: {error.strerror or error}'
    ) from None
  if is_file:
    raise errors.ConfigError(f'--workdir {workdir} is a file, not a directory')


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of ``bort-train``; returns the exit status.

  Errors of the run's inputs (config, arguments, data, work directory) and
  faults it detects (non-finite loss, no usable checkpoint) are printed as
  ``bort-train: error: <message>``, without a traceback: exit status 2 for
  a config or argument no run can use, 1 for the others, 130/143 after
  SIGINT/SIGTERM (with a checkpoint saved; before the training starts,
  with nothing written). Other exceptions are bugs and keep their
  traceback.
  """
  with interrupt.InterruptWatcher() as startup:
    return _main(argv, startup)


def _interrupted(watcher: interrupt.InterruptWatcher) -> int | None:
  """The exit status if a signal came during the start-up."""
  if watcher.signal_number is None:
    return None
  error = errors.Interrupted(None, watcher.signal_number)
  print(f'bort-train: {error}', file=sys.stderr)
  return error.exit_code


def _main(
    argv: Sequence[str] | None, startup: interrupt.InterruptWatcher
) -> int:
  """:func:`main` with signals recorded by ``startup``."""
  parser = build_parser()
  args, extra = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
  _report_warnings()
  prepare_mnist.quiet_tfds_off_terminal()
  if args.mnist_idx_dir is None:
    args.mnist_idx_dir = os.environ.get(IDX_DIR_ENV) or None
  try:
    check_arguments(args)
  except errors.ConfigError as error:
    parser.error(str(error))
  if (
      args.coordinator_address
      or args.num_processes
      or args.process_id is not None
  ):
    parallel.initialize_distributed(
        args.coordinator_address, args.num_processes, args.process_id
    )
  workdir = Path(args.workdir)
  try:
    config = resolve_config(args, workdir, extra)
    names = parse_compare(args.compare) if args.compare else [config.optimizer]
  except (ValueError, FileNotFoundError) as error:
    parser.error(str(error))

  try:
    if (
        config.dataset == 'mnist'
    ):  # local IDX files first; tfds downloads only if still missing
      ensure_mnist_prepared(args.data_dir, args.mnist_idx_dir)
    if jax.process_index() == 0:
      print(
          f'bort-train: {config.dataset} from {data.resolve_data_dir(args.data_dir)}'
          f'{" (downloaded if missing)" if args.download else ""}; writing to '
          f'{workdir} (metrics.jsonl, TensorBoard events, checkpoints)',
          file=sys.stderr,
          flush=True,
      )
    rows = []
    for name in names:
      if (code := _interrupted(startup)) is not None:
        return code
      run_config = configs.replace(config, optimizer=name)
      run_dir = workdir / name if args.compare else workdir
      start = time.perf_counter()
      loop.train_and_evaluate(
          run_config,
          run_dir,
          data_dir=args.data_dir,
          download=args.download,
          resume=args.resume,
          overwrite=args.overwrite,
          allow_unverified=args.allow_unverified_checkpoint,
          max_steps=args.max_steps,
          progress=not args.no_progress,
          description=name,
      )
      rows.append(
          comparison_row(
              name, loop.last_evaluation(run_dir), time.perf_counter() - start
          )
      )
  except errors.Interrupted as error:
    print(f'bort-train: {error}', file=sys.stderr)
    return error.exit_code
  except errors.BortError as error:
    print(f'bort-train: error: {error}', file=sys.stderr)
    return error.exit_code
  except (
      data.DatasetNotFoundError,
      FileExistsError,
      FileNotFoundError,
  ) as error:
    print(f'bort-train: error: {error}', file=sys.stderr)
    return 1
  except ValueError as error:
    print(f'bort-train: error: {error}', file=sys.stderr)
    return 2
  except OSError as error:  # a full disk, a file-size limit...; names the file
    print(f'bort-train: error: {error}', file=sys.stderr)
    return 1
  print(
      f'\n{config.name}: {config.epochs} epoch{"s" if config.epochs != 1 else ""}, '
      f'batch {config.batch_size}, '
      f'gamma {config.gamma} (bort_* only), work directory {workdir}'
  )
  print(format_comparison(rows))
  return 0


if __name__ == '__main__':
  sys.exit(main())
