"""The ``mnist_cnn`` config: ``bort-train --config mnist_cnn``.

The recipe and its sources are in the docstring of
:mod:`bort_jax.training.configs.mnist_cnn`, where the config lives so that
``bort-train`` finds it after ``pip install``; this module re-exports it.
"""

from bort_jax.training.configs.mnist_cnn import get_config

__all__ = ['get_config']
