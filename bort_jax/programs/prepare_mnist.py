"""``bort-prepare-mnist``: build tfds ``mnist`` from the four MNIST IDX files.

Without TensorFlow or a download (see :mod:`bort_jax.data.mnist_idx`)::

  bort-prepare-mnist --idx-dir path/to/mnist_idx --data-dir /tmp/tfds

``--idx-dir`` defaults to ``$BORT_MNIST_IDX_DIR``; ``--data-dir`` to
``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``. What it reports ready
is read back first (:func:`bort_jax.data.mnist_idx.verify_prepared`): each
split's files exist and hold the examples their metadata counts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from bort_jax import data
from bort_jax.data import mnist_idx
from bort_jax.programs import common
from bort_jax.programs.common import IDX_DIR_ENV

PROGRAM = 'bort-prepare-mnist'


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser of ``bort-prepare-mnist``."""
  parser = argparse.ArgumentParser(
      prog=PROGRAM,
      description=(
          'Build the tfds "mnist" data set (3.0.1, array_record) from the four '
          'MNIST IDX .gz files, without TensorFlow or a download. Does nothing '
          'if it is already prepared.'
      ),
  )
  parser.add_argument(
      '--idx-dir',
      default=os.environ.get(IDX_DIR_ENV),
      required=not os.environ.get(IDX_DIR_ENV),
      help='folder with train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, '
      f't10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz (default: '
      f'${IDX_DIR_ENV})',
  )
  parser.add_argument(
      '--data-dir',
      default=None,
      help='tfds data dir to write to (default: $TFDS_DATA_DIR, else '
      '~/tensorflow_datasets)',
  )
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of ``bort-prepare-mnist``; returns the exit status."""
  args = build_parser().parse_args(argv)
  common.quiet_tfds_off_terminal()
  data_dir = data.resolve_data_dir(args.data_dir)
  start = time.perf_counter()
  try:
    path = mnist_idx.prepare_mnist(args.idx_dir, data_dir)
    # Counted from the data read back, not from its metadata.
    counts = mnist_idx.verify_prepared(data_dir)
  except (OSError, ValueError) as error:
    return common.report_error(PROGRAM, error, 1)
  counts = ', '.join(f'{split} {count}' for split, count in counts.items())
  print(
      f'mnist ready in {path} ({counts}; {time.perf_counter() - start:.1f} s).\n'
      f"Read it with tfds.data_source('mnist', data_dir={os.fspath(data_dir)!r}, "
      'download=False).'
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
