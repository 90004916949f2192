r"""Per-seed measurements of the protocol: one baseline/Bort pair at a time.

For every trained model (and, for the saliency sanity check, the same
architecture at its initialisation) :func:`measure_model` measures on the
first test examples, one module per claim:

1. :mod:`.reconstruction`: from every layer down to the input (transposed
   weights and least-squares inverse), layer by layer, and by optimisation
   from the top layer;
2. :mod:`.saliency`: SAT and the gradient baselines, deletion and
   insertion AUC, the model-randomisation sanity check;
3. :mod:`.adversarial`: the same targeted PGD-L2 attack at fixed L2
   budgets, the samples kept for the transfer test, our backtracking
   procedure.

Every number is a mean over the examples; the protocol aggregates seeds.
:class:`MeasureConfig` says how many examples each measurement uses.
"""

from bort_jax.programs.explain.measure.adversarial import (
    adversarial_budgets,
    transfer_success,
)
from bort_jax.programs.explain.measure.common import (
    representation_layers,
    weighted_layers,
)
from bort_jax.programs.explain.measure.config import MeasureConfig
from bort_jax.programs.explain.measure.model import measure_model
from bort_jax.programs.explain.measure.saliency import (
    GRADIENT_METHODS,
    sanity_correlation,
)

__all__ = [
    'GRADIENT_METHODS',
    'MeasureConfig',
    'adversarial_budgets',
    'measure_model',
    'representation_layers',
    'sanity_correlation',
    'transfer_success',
    'weighted_layers',
]
