"""Explainability procedures of Bort: invert, backtrack, explain, attack.

The core is :func:`backtrack`, a function transformation: for any JAX
function ``f`` of one array (an NNX module of any structure, a linen model
through ``functools.partial(model.apply, variables)``, a plain function),
``backtrack(f, x_like)`` returns ``g``, which maps ``f``'s output back to
its input by running ``f``'s primitives backwards, with the Bort paper's
transposed weights (``method='transpose'``) or by least squares
(``method='pinv'``). The procedures take a model and the layer to explain
from (a chain's layer name or index, or a function up to that layer):

* :func:`reconstruct`, :func:`reconstruct_all`, :func:`layer_inverse`:
  representations back to input space;
  :func:`invert_by_optimization`: the optimisation baseline (Mahendran and
  Vedaldi 2015);
* :func:`backtracking_saliency` (the paper's SAT), :func:`feature_visualization`
  and the gradient baselines;
* :func:`explainable_adversarial` (our design, from the backtracking map),
  :func:`fgsm`, :func:`pgd`;
* the metrics: MSE, PSNR, SSIM, Pearson r, affine-fitted MSE,
  deletion/insertion AUC, attack success, perturbation norms.

Where the pieces live: :mod:`~bort_jax.explain.interpreter` (the
transformation, :func:`custom_inverse`), :mod:`~bort_jax.explain.rules`
(one backward rule per primitive), :mod:`~bort_jax.explain.kernels` (the
linear algebra: transposed-weight and least-squares inverses of Dense, Conv,
pooling), :mod:`~bort_jax.explain.graph` (a function as a graph of
primitives), :mod:`~bort_jax.explain.chain` (layer chains),
:mod:`~bort_jax.explain.registry` (:func:`register_inverse` for a layer type
of one's own).

Every function is pure: it takes a model (passed as an argument, so
``jax.jit`` traces its parameters) and arrays and returns arrays.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from flax import nnx
  >>> from bort_jax import explain
  >>> from bort_jax.models import InvertibleCNN
  >>> model = InvertibleCNN(channels=(4, 8), rngs=nnx.Rngs(0))
  >>> x = jnp.zeros((2, 28, 28, 1))
  >>> z = model.forward_to(x, 'down2_lrelu')
  >>> recon = jax.jit(explain.reconstruct, static_argnums=(2, 3))
  >>> recon(model, z, 'down2_lrelu', (28, 28, 1)).shape
  (2, 28, 28, 1)
"""

from bort_jax._extras import extra_imports

with extra_imports('bort_jax.explain', 'explain'):
  from bort_jax.explain import chain
  from bort_jax.explain import kernels
  from bort_jax.explain import rules
  from bort_jax.explain.adversarial import classifier_input_layer
  from bort_jax.explain.adversarial import explainable_adversarial
  from bort_jax.explain.adversarial import fgsm
  from bort_jax.explain.adversarial import pgd
  from bort_jax.explain.interpreter import backtrack
  from bort_jax.explain.interpreter import custom_inverse
  from bort_jax.explain.inverse import backtracking_map
  from bort_jax.explain.inverse import layer_inverse
  from bort_jax.explain.inverse import reconstruct
  from bort_jax.explain.inverse import reconstruct_all
  from bort_jax.explain.metrics import affine_fitted_mse
  from bort_jax.explain.metrics import attack_success
  from bort_jax.explain.metrics import auc
  from bort_jax.explain.metrics import cosine_similarity
  from bort_jax.explain.metrics import deletion_curve
  from bort_jax.explain.metrics import insertion_curve
  from bort_jax.explain.metrics import mass_on_mask
  from bort_jax.explain.metrics import mean_confidence_interval
  from bort_jax.explain.metrics import mse
  from bort_jax.explain.metrics import pearson_r
  from bort_jax.explain.metrics import perturbation_norms
  from bort_jax.explain.metrics import psnr
  from bort_jax.explain.metrics import spearman_rank_correlation
  from bort_jax.explain.metrics import ssim
  from bort_jax.explain.metrics import target_likeness
  from bort_jax.explain.optimization_inversion import invert_by_optimization
  from bort_jax.explain.optimization_inversion import total_variation
  from bort_jax.explain.registry import register_inverse
  from bort_jax.explain.saliency import attribution_map
  from bort_jax.explain.saliency import backtracking_saliency
  from bort_jax.explain.saliency import feature_visualization
  from bort_jax.explain.saliency import gradient_x_input
  from bort_jax.explain.saliency import integrated_gradients
  from bort_jax.explain.saliency import vanilla_gradient

__all__ = [
    # The transformation and the procedures.
    'backtrack',
    'backtracking_map',
    'backtracking_saliency',
    'classifier_input_layer',
    'custom_inverse',
    'explainable_adversarial',
    'feature_visualization',
    'fgsm',
    'invert_by_optimization',
    'layer_inverse',
    'pgd',
    'reconstruct',
    'reconstruct_all',
    'register_inverse',
    # Gradient baselines.
    'attribution_map',
    'gradient_x_input',
    'integrated_gradients',
    'vanilla_gradient',
    # Metrics.
    'affine_fitted_mse',
    'attack_success',
    'auc',
    'cosine_similarity',
    'deletion_curve',
    'insertion_curve',
    'mass_on_mask',
    'mean_confidence_interval',
    'mse',
    'pearson_r',
    'perturbation_norms',
    'psnr',
    'spearman_rank_correlation',
    'ssim',
    'target_likeness',
    'total_variation',
    # Where the rest lives.
    'chain',
    'kernels',
    'rules',
]
