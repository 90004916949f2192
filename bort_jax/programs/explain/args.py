"""Command-line arguments of ``bort-explain``: their types and groups.

Each ``type=`` here checks one value at parse time, so that a bad value
stops the command before any work, with argparse's usage message.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from bort_jax.programs.explain import measure, protocol

__all__ = [
    'DEFAULT_EPOCHS',
    'DEFAULT_TRAIN_EXAMPLES',
    'add_analysis_arguments',
    'add_output_arguments',
    'add_run_arguments',
    'analysis_settings',
    'at_least',
    'finite',
    'model_names',
    'per_model',
    'seed_list',
]

#: Epochs per architecture of the default (two-CPU) budget.
DEFAULT_EPOCHS = {'bort_invertible_cnn': 2, 'invertible_cnn': 2, 'mlp': 2}
#: Training examples per architecture of the default budget (0: all).
DEFAULT_TRAIN_EXAMPLES = {
    'bort_invertible_cnn': 0,
    'invertible_cnn': 0,
    'mlp': 0,
}


def model_names(text: str) -> list[str]:
  """An argparse type: comma-separated architectures of the protocol."""
  names = [n.strip() for n in text.split(',') if n.strip()]
  unknown = [n for n in names if n not in protocol.ARCHITECTURE_CONFIGS]
  if not names or unknown:
    raise argparse.ArgumentTypeError(
        f'unknown model(s) {unknown or text!r}; valid: '
        f'{",".join(protocol.ARCHITECTURE_CONFIGS)}'
    )
  return names


def seed_list(text: str) -> list[int]:
  """An argparse type: comma-separated distinct non-negative seeds."""
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


def at_least(minimum: int) -> Callable[[str], int]:
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


def finite(*, positive: bool) -> Callable[[str], float]:
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


def per_model(minimum: int) -> Callable[[str], dict[str, int]]:
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


def add_output_arguments(
    parser: argparse.ArgumentParser, *, idx_dir_env: str
) -> None:
  """The report folder, the data, the notes.

  Args:
    parser: the parser to add them to.
    idx_dir_env: the environment variable of the default ``--idx-dir``.
  """
  parser.add_argument(
      '--out',
      default='explain_report',
      help='report folder (default %(default)s)',
  )
  parser.add_argument(
      '--data-dir', default=None, help='tfds data dir (default $TFDS_DATA_DIR)'
  )
  parser.add_argument(
      '--idx-dir',
      default=None,
      help='MNIST IDX files, used if the data dir is not prepared '
      f'(default ${idx_dir_env})',
  )
  parser.add_argument(
      '--note',
      action='append',
      default=[],
      help='a line added to the notes of report.md (repeatable)',
  )


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
  """The ``runs`` group: which models and seeds, trained how, or read where."""
  runs = parser.add_argument_group('runs')
  runs.add_argument(
      '--models',
      type=model_names,
      default=list(protocol.ARCHITECTURE_CONFIGS),
      help='architectures (default: %(default)s)',
  )
  runs.add_argument(
      '--seeds',
      type=seed_list,
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
      type=per_model(1),
      default=None,
      help=f'N or model=N,... (default {DEFAULT_EPOCHS})',
  )
  runs.add_argument(
      '--train-examples',
      type=per_model(0),
      default=None,
      help='first N training examples, N or model=N,... (0: '
      f'all; default {DEFAULT_TRAIN_EXAMPLES})',
  )
  runs.add_argument('--learning-rate', type=finite(positive=True), default=2e-3)
  runs.add_argument('--weight-decay', type=finite(positive=False), default=1e-4)
  runs.add_argument(
      '--gamma',
      type=finite(positive=False),
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


#: Analysis options: (flag, MeasureConfig field, help or None).
_ANALYSIS_OPTIONS = (
    ('--reconstruction-examples', 'num_reconstruction', None),
    ('--inversion-examples', 'num_inversion', None),
    ('--inversion-steps', 'inversion_steps', None),
    ('--saliency-examples', 'num_saliency', None),
    ('--sat-k', 'sat_k', 'SAT k (default: min(256, channels))'),
    ('--ig-steps', 'ig_steps', None),
    ('--deletion-steps', 'deletion_steps', None),
    ('--adversarial-examples', 'num_adversarial', None),
    ('--pgd-steps', 'pgd_steps', None),
    ('--figure-examples', 'num_figure_examples', None),
)


def add_analysis_arguments(parser: argparse.ArgumentParser) -> None:
  """The ``analysis`` group: examples and steps of every measurement."""
  defaults = measure.MeasureConfig()
  group = parser.add_argument_group(
      'analysis (examples are the first of the test set)'
  )
  for flag, field, help_text in _ANALYSIS_OPTIONS:
    group.add_argument(
        flag,
        type=at_least(1),
        default=getattr(defaults, field),
        help=help_text,
    )


def analysis_settings(args: argparse.Namespace) -> dict[str, int | None]:
  """The :class:`measure.MeasureConfig` fields given by parsed arguments."""
  return {
      field: getattr(args, flag[2:].replace('-', '_'))
      for flag, field, _ in _ANALYSIS_OPTIONS
  }
