"""The ``mnist_mlp`` config: ``bort-train --config mnist_mlp``.

The recipe and its sources are in the docstring of
:mod:`bort_jax.training.configs.mnist_mlp`, where the config lives so that
``bort-train`` finds it after ``pip install``; this module re-exports it.
"""

from bort_jax.training.configs.mnist_mlp import get_config

__all__ = ['get_config']
