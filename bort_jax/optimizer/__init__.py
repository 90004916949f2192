"""Bort as optax gradient transformations."""

from bort_jax.optimizer.correction import ADAPTIVE
from bort_jax.optimizer.correction import MODES
from bort_jax.optimizer.correction import bort_correction
from bort_jax.optimizer.correction import matrix_correction
from bort_jax.optimizer.layout import BortDimensionNumbers
from bort_jax.optimizer.masking import default_dimension_numbers
from bort_jax.optimizer.masking import default_mask
from bort_jax.optimizer.masking import kernels_except
from bort_jax.optimizer.masking import stacked_dimension_numbers
from bort_jax.optimizer.report import orthogonality_report
from bort_jax.optimizer.report import summarize_report
from bort_jax.optimizer.transform import AddBortCorrectionState
from bort_jax.optimizer.transform import add_bort_correction
from bort_jax.optimizer.transform import add_decoupled_bort_correction
from bort_jax.optimizer.transform import bort_adamw
from bort_jax.optimizer.transform import bort_sgd
from bort_jax.optimizer.transform import with_bort

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
