"""The experiments' configs (``bort-train --config NAME``), one module each.

Each module re-exports ``get_config`` from :mod:`bort_jax.training.configs`,
where the configs live so that ``bort-train`` finds them after ``pip
install``; see that module's docstrings for the recipes.
"""

from bort_jax.training.configs import CONFIG_NAMES
from bort_jax.training.configs import get_config

__all__ = ['CONFIG_NAMES', 'get_config']
