"""The ``imagenet_deit_s`` config: ``bort-train --config imagenet_deit_s``.

The recipe and its sources are in the docstring of
:mod:`bort_jax.training.configs.imagenet_deit_s`, where the config lives so that
``bort-train`` finds it after ``pip install``; this module re-exports it.
"""

from bort_jax.training.configs.imagenet_deit_s import get_config

__all__ = ['get_config']
