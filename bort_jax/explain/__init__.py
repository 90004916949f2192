"""Explainability procedures of Bort: invert, backtrack, explain, attack.

* :mod:`~bort_jax.explain.inverse`: layer inverses (transposed weights, or
  least squares with ``method='pinv'``) and :func:`reconstruct`, the
  backtracking map from any layer of a sequential model to input space: our
  ``NamedSequential`` models (MLP, InvertibleCNN, InvertibleVGG16) and any
  user's ``nnx.Sequential``.
* :mod:`~bort_jax.explain.registry`: :func:`register_inverse`, which
  declares the inverse of a user's layer type (the built-ins use it too).
* :mod:`~bort_jax.explain.chain`: layer chains (layers and names of either
  kind of model, :func:`forward_to`, per-layer shapes).
* :mod:`~bort_jax.explain.optimization_inversion`: optimisation-based inversion baseline
  (Mahendran and Vedaldi 2015).
* :mod:`~bort_jax.explain.saliency`: the paper's backtracking saliency (SAT),
  feature visualisation, and the gradient baselines.
* :mod:`~bort_jax.explain.adversarial`: explainable adversarial samples (our
  design, from the backtracking map), FGSM and PGD.
* :mod:`~bort_jax.explain.metrics`: MSE, PSNR, SSIM, deletion/insertion AUC,
  attack success, perturbation norms, target-likeness.
* :mod:`~bort_jax.explain.figures`: matplotlib figures;
  :mod:`~bort_jax.explain.cli`: the ``bort-explain`` experiment.

Every function is pure: it takes an NNX model (passed as an argument, so
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

from bort_jax.explain.adversarial import NORMS
from bort_jax.explain.adversarial import classifier_input_layer
from bort_jax.explain.adversarial import explainable_adversarial
from bort_jax.explain.adversarial import fgsm
from bort_jax.explain.adversarial import pgd
from bort_jax.explain.chain import forward_to
from bort_jax.explain.chain import layer_chain
from bort_jax.explain.chain import resolve_layer
from bort_jax.explain.inverse import METHODS
from bort_jax.explain.inverse import SCALINGS
from bort_jax.explain.inverse import batch_norm_inverse
from bort_jax.explain.inverse import conv_inverse
from bort_jax.explain.inverse import conv_pinv
from bort_jax.explain.inverse import dense_inverse
from bort_jax.explain.inverse import dense_pinv
from bort_jax.explain.inverse import flatten_inverse
from bort_jax.explain.inverse import invertible_layer_names
from bort_jax.explain.inverse import layer_input_shapes
from bort_jax.explain.inverse import layer_inverse
from bort_jax.explain.inverse import leaky_relu_inverse
from bort_jax.explain.inverse import least_squares_inverse
from bort_jax.explain.inverse import pool_inverse
from bort_jax.explain.inverse import reconstruct
from bort_jax.explain.inverse import reconstruct_all
from bort_jax.explain.inverse import relu_inverse
from bort_jax.explain.inverse import unit_scales
from bort_jax.explain.optimization_inversion import invert_by_optimization
from bort_jax.explain.optimization_inversion import total_variation
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
from bort_jax.explain.registry import register_inverse
from bort_jax.explain.saliency import SAT_B
from bort_jax.explain.saliency import SAT_K
from bort_jax.explain.saliency import SAT_TAU
from bort_jax.explain.saliency import attribution_map
from bort_jax.explain.saliency import backtracking_saliency
from bort_jax.explain.saliency import feature_visualization
from bort_jax.explain.saliency import gradient_x_input
from bort_jax.explain.saliency import integrated_gradients
from bort_jax.explain.saliency import resolve_k
from bort_jax.explain.saliency import vanilla_gradient

__all__ = [
    'METHODS',
    'NORMS',
    'SAT_B',
    'SAT_K',
    'SAT_TAU',
    'SCALINGS',
    'affine_fitted_mse',
    'attack_success',
    'attribution_map',
    'auc',
    'backtracking_saliency',
    'batch_norm_inverse',
    'classifier_input_layer',
    'conv_inverse',
    'conv_pinv',
    'cosine_similarity',
    'deletion_curve',
    'dense_inverse',
    'dense_pinv',
    'explainable_adversarial',
    'feature_visualization',
    'fgsm',
    'flatten_inverse',
    'forward_to',
    'gradient_x_input',
    'insertion_curve',
    'integrated_gradients',
    'invert_by_optimization',
    'invertible_layer_names',
    'layer_chain',
    'layer_input_shapes',
    'layer_inverse',
    'leaky_relu_inverse',
    'least_squares_inverse',
    'mass_on_mask',
    'mean_confidence_interval',
    'mse',
    'pearson_r',
    'perturbation_norms',
    'pgd',
    'pool_inverse',
    'psnr',
    'reconstruct',
    'reconstruct_all',
    'register_inverse',
    'relu_inverse',
    'resolve_k',
    'resolve_layer',
    'spearman_rank_correlation',
    'ssim',
    'target_likeness',
    'total_variation',
    'unit_scales',
    'vanilla_gradient',
]
