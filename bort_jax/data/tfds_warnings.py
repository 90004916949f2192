"""Silencing two tfds warnings that say nothing to a reader of this package."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

__all__ = ['quiet_tfds_warnings']


class _DropMessages(logging.Filter):
  """Drops log records whose message template contains one of ``fragments``."""

  def __init__(self, fragments: Sequence[str]):
    super().__init__()
    self.fragments = tuple(fragments)

  def filter(self, record: logging.LogRecord) -> bool:
    return not any(f in str(record.msg) for f in self.fragments)


@contextlib.contextmanager
def quiet_tfds_warnings() -> Iterator[None]:
  """Silences two tfds warnings that say nothing to a reader of this package.

  ``Variant folder ... has no dataset_info.json`` is logged by
  ``builder.is_prepared()`` for a data set that is not prepared (the
  question it answers), and ``OpenCV is not installed`` by tfds' image
  decoding, which this package does with pillow on purpose. Only inside the
  ``with`` block: tfds' other warnings, and these outside it, are untouched.

  Example:
    >>> import logging
    >>> from bort_jax.data.tfds_warnings import quiet_tfds_warnings
    >>> with quiet_tfds_warnings():
    ...   logging.getLogger('absl').warning('Variant folder %s has no %s', 'x', 'y')
  """
  absl_logger = logging.getLogger('absl')
  dropped = _DropMessages(('has no %s', 'OpenCV is not installed'))
  absl_logger.addFilter(dropped)
  try:
    yield
  finally:
    absl_logger.removeFilter(dropped)
