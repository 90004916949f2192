"""The ``imagenet_vgg16`` config: ``bort-train --config imagenet_vgg16``.

The recipe and its sources are in the docstring of
:mod:`bort_jax.training.configs.imagenet_vgg16`, where the config lives so that
``bort-train`` finds it after ``pip install``; this module re-exports it.
"""

from bort_jax.training.configs.imagenet_vgg16 import get_config

__all__ = ['get_config']
