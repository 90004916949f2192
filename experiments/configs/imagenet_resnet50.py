"""The ``imagenet_resnet50`` config: ``bort-train --config imagenet_resnet50``.

The recipe and its sources are in the docstring of
:mod:`bort_jax.training.configs.imagenet_resnet50`, where the config lives so that
``bort-train`` finds it after ``pip install``; this module re-exports it.
"""

from bort_jax.training.configs.imagenet_resnet50 import get_config

__all__ = ['get_config']
