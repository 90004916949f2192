"""Fixtures of the explainability tests (helpers in :mod:`testing`).

A convolution whose im2col matrix is square and orthogonal, followed by a
LeakyReLU, loses nothing, so :func:`bort_jax.explain.reconstruct` must give
the input back up to float error.
"""

import pytest

from testing import make_lossless_cnn, normal


@pytest.fixture(scope='session')
def lossless_cnn():
  return make_lossless_cnn()


@pytest.fixture(scope='session')
def images():
  """``[3, 8, 8, 1]`` random images."""
  return normal(42, (3, 8, 8, 1))
