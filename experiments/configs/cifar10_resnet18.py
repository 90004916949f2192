"""The ``cifar10_resnet18`` config: ``bort-train --config cifar10_resnet18``.

The recipe and its sources are in the docstring of
:mod:`bort_jax.training.configs.cifar10_resnet18`, where the config lives so that
``bort-train`` finds it after ``pip install``; this module re-exports it.
"""

from bort_jax.training.configs.cifar10_resnet18 import get_config

__all__ = ['get_config']
