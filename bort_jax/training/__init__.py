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

The loop and checkpointing (``train_and_evaluate``, ``TrainResult``,
``restore_model``) are imported on first use, so the configs, optimizers and
pure steps work where tensorflow-datasets or orbax are not installed (a
benchmark on a bare accelerator machine, say).
"""

import importlib

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

_LAZY_ATTRIBUTES = {
    'restore_model': 'bort_jax.training.checkpoint',
    'TrainResult': 'bort_jax.training.train',
    'train_and_evaluate': 'bort_jax.training.train',
}


def __getattr__(name):
  if name in _LAZY_ATTRIBUTES:
    return getattr(importlib.import_module(_LAZY_ATTRIBUTES[name]), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(set(globals()) | set(_LAZY_ATTRIBUTES))


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
