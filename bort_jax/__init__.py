"""bort_jax: Bort (bounded orthogonal constraint, ICLR 2023) for JAX, Optax and Flax."""

from bort_jax.optimizer import ADAPTIVE
from bort_jax.optimizer import MODES
from bort_jax.optimizer import AddBortCorrectionState
from bort_jax.optimizer import BortDimensionNumbers
from bort_jax.optimizer import add_bort_correction
from bort_jax.optimizer import add_decoupled_bort_correction
from bort_jax.optimizer import bort_adamw
from bort_jax.optimizer import bort_correction
from bort_jax.optimizer import bort_sgd
from bort_jax.optimizer import with_bort
from bort_jax.optimizer import default_dimension_numbers
from bort_jax.optimizer import default_mask
from bort_jax.optimizer import kernels_except
from bort_jax.optimizer import matrix_correction
from bort_jax.optimizer import orthogonality_report
from bort_jax.optimizer import stacked_dimension_numbers
from bort_jax.optimizer import summarize_report

__all__ = [
    'ADAPTIVE',
    'AddBortCorrectionState',
    'BortDimensionNumbers',
    'MODES',
    'add_bort_correction',
    'add_decoupled_bort_correction',
    'bort_adamw',
    'bort_correction',
    'bort_sgd',
    'default_dimension_numbers',
    'default_mask',
    'kernels_except',
    'matrix_correction',
    'orthogonality_report',
    'stacked_dimension_numbers',
    'summarize_report',
    'with_bort',
]

__version__ = '0.1.0'
