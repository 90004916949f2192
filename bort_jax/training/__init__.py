"""Training Bort and baseline models: configs, optimizers by name, the loop.

* :class:`TrainConfig`, :func:`override` and :func:`get_config` (the
  experiments' configs, :data:`CONFIG_NAMES`);
* :func:`create_optimizer` (:data:`OPTIMIZER_NAMES`) and
  :func:`create_learning_rate_schedule`;
* :func:`train_and_evaluate`: data-parallel training (``jax.jit`` over a
  device mesh, FSDP optional, or ``jax.pmap``; multi-host), per-epoch
  evaluation, ``metrics.jsonl``, orbax checkpoints and resumption;
* :func:`restore_model`: a trained model back from its work directory;
* the pure steps: :class:`TrainState`, :func:`create_train_state`,
  :func:`make_train_step`, :func:`make_eval_step`.

The command line is ``bort-train`` (:mod:`bort_jax.training.cli`).
"""

from bort_jax.training.checkpoint import restore_model
from bort_jax.training.config import TrainConfig
from bort_jax.training.config import override
from bort_jax.training.configs import CONFIG_NAMES
from bort_jax.training.configs import get_config
from bort_jax.training.optimizers import OPTIMIZER_NAMES
from bort_jax.training.optimizers import create_learning_rate_schedule
from bort_jax.training.optimizers import create_optimizer
from bort_jax.training.step import ModelDefinition
from bort_jax.training.step import TrainState
from bort_jax.training.step import create_train_state
from bort_jax.training.step import make_eval_step
from bort_jax.training.step import make_train_step
from bort_jax.training.train import TrainResult
from bort_jax.training.train import train_and_evaluate

__all__ = [
    'CONFIG_NAMES',
    'ModelDefinition',
    'OPTIMIZER_NAMES',
    'TrainConfig',
    'TrainResult',
    'TrainState',
    'create_learning_rate_schedule',
    'create_optimizer',
    'create_train_state',
    'get_config',
    'make_eval_step',
    'make_train_step',
    'override',
    'restore_model',
    'train_and_evaluate',
]
