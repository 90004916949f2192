"""Training Bort and baseline models: optimizers by name, steps, parallelism.

The package root holds the pure pieces, importable without
tensorflow-datasets or orbax (a benchmark on a bare accelerator machine,
say):

* :func:`create_optimizer` (:data:`OPTIMIZER_NAMES`),
  :func:`optimizer_from_config` and :func:`create_learning_rate_schedule`
  (:mod:`~bort_jax.training.optimizer_factory`);
* the pure steps: :class:`TrainState`, :func:`create_train_state`,
  :func:`make_train_step`, :func:`make_eval_step`
  (:mod:`~bort_jax.training.step`);
* :func:`model_from_config` (:mod:`~bort_jax.training.modeling`).

The input and output pieces are imported from their modules:

* :func:`bort_jax.training.loop.train_and_evaluate`, the training loop:
  data-parallel training (``jax.jit`` over a device mesh, FSDP optional, or
  ``jax.pmap``; multi-host), per-epoch evaluation, ``metrics.jsonl``, orbax
  checkpoints and resumption;
* :func:`bort_jax.training.checkpoint.restore_model`: a trained model back
  from its work directory.

Configs are in :mod:`bort_jax.configs`; the command line is ``bort-train``
(:mod:`bort_jax.programs.train`).

Example:
  >>> from bort_jax import configs, training
  >>> tx, schedule = training.optimizer_from_config(
  ...     configs.get_config('mnist_cnn'), steps_per_epoch=100)
"""

from bort_jax._extras import extra_imports

with extra_imports('bort_jax.training', 'train'):
  from bort_jax.training.modeling import model_from_config
  from bort_jax.training.optimizer_factory import OPTIMIZER_NAMES
  from bort_jax.training.optimizer_factory import create_learning_rate_schedule
  from bort_jax.training.optimizer_factory import create_optimizer
  from bort_jax.training.optimizer_factory import optimizer_from_config
  from bort_jax.training.optimizer_factory import peak_learning_rate
  from bort_jax.training.step import ModelDefinition
  from bort_jax.training.step import TrainState
  from bort_jax.training.step import create_train_state
  from bort_jax.training.step import make_eval_step
  from bort_jax.training.step import make_train_step

__all__ = [
    'ModelDefinition',
    'OPTIMIZER_NAMES',
    'TrainState',
    'create_learning_rate_schedule',
    'create_optimizer',
    'create_train_state',
    'make_eval_step',
    'make_train_step',
    'model_from_config',
    'optimizer_from_config',
    'peak_learning_rate',
]
