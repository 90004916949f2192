"""The base training config: every field, its default, and the validation.

Every recipe (``mnist_cnn.py``, ``imagenet_resnet50.py``...) is a
``get_config()`` that starts from :func:`get_config` here and changes only
what differs. A config is an ``ml_collections.ConfigDict``, locked so that a
misspelt field fails instead of adding a new one; ``model_kwargs`` stays
open (it holds the model's own constructor arguments).

Fields:

* ``name``: the config's name (recorded in ``config.json``).
* Data: ``dataset`` (``mnist``, ``cifar10``, ``imagenet2012``), ``model``
  (a :data:`bort_jax.models.MODEL_NAMES` entry), ``model_kwargs`` (extra
  constructor arguments; the input-shape ones are derived from the data set
  unless given here), ``image_size`` (ImageNet train/eval resolution, 0:
  224), ``augment``, ``train_examples`` / ``eval_examples`` (the first N
  examples only, 0: all), ``in_memory`` (decode MNIST/CIFAR-10 into memory),
  ``data_workers`` (Grain worker processes reading and decoding batches,
  0: in the training process), ``data_threads`` (reading threads in each
  of those processes). Neither changes the batches.
* Optimizer: ``optimizer`` (:data:`OPTIMIZER_NAMES`, built by
  :func:`bort_jax.training.create_optimizer`),
  ``learning_rate`` (peak; if ``lr_reference_batch_size`` is positive the
  peak is ``learning_rate * batch_size / lr_reference_batch_size``, the
  linear scaling rule), ``schedule`` (``cosine`` to 0, ``step``: times
  ``lr_decay_factor`` at each of ``lr_decay_epochs``, or ``constant``),
  ``warmup_epochs`` (linear warmup from 0, may be fractional),
  ``weight_decay`` (on the kernels Bort constrains,
  :func:`bort_jax.default_mask`, for every optimizer), ``momentum`` and
  ``nesterov`` (SGD), ``b1``, ``b2``, ``eps`` (Adam/LAMB/Lion),
  ``label_smoothing``.
* Bort (``bort_*`` optimizers only, see ``docs/method.md``): ``gamma``, the
  coefficient; ``amplitude``, a positive number or ``'adaptive'`` (also the
  amplitude the orthogonality figures are measured against); ``bort_mode``
  (see :data:`bort_jax.MODES`); ``bort_exclude``, the layers left out of the
  Bort term (weight decay still applies): layer names (``classifier``,
  ``head``, resolved by the model, :func:`bort_jax.models.exclusion_patterns`)
  or regular expressions over kernel paths (``^layers/3/kernel$``, ``^head/``,
  :func:`bort_jax.kernels_except`).
* Loop: ``epochs``, ``batch_size`` and ``eval_batch_size`` (global: all
  devices and processes), ``dtype`` (compute dtype, ``float32`` or
  ``bfloat16``; parameters and optimizer state stay float32), ``seed``
  (initialisation, data order, augmentation), ``parallel`` (``jit``: one
  program over a device mesh, the batch sharded on its ``data`` axis; or
  ``pmap``), ``param_sharding`` (with ``jit``: ``replicated`` or ``fsdp``,
  each large array sharded along its largest divisible axis),
  ``fsdp_min_size`` (smaller arrays stay replicated), ``log_every_steps``
  and ``checkpoint_every_steps`` (also within epochs; 0: per epoch),
  ``keep_checkpoints`` (at least 1).
* Faults: a non-finite training loss or parameters stop the run with an
  error (the newest checkpoint stays the last finite state) unless
  ``skip_nonfinite_steps``: then an update whose gradients are not finite
  is skipped (``optax.apply_if_finite``), up to
  ``max_consecutive_nonfinite`` in a row.

Example:
  >>> from bort_jax.configs.base import get_config
  >>> config = get_config()
  >>> config.epochs = 3
  >>> config.epoch = 3
  Traceback (most recent call last):
  ...
  AttributeError: ...
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import ml_collections

SCHEDULES = ('cosine', 'step', 'constant')
PARALLEL_MODES = ('jit', 'pmap')
PARAM_SHARDINGS = ('replicated', 'fsdp')
DTYPES = ('float32', 'bfloat16')

#: The optimizer families; each has a baseline ``NAME`` and ``bort_NAME``.
OPTIMIZER_FAMILIES: tuple[str, ...] = ('sgd', 'adamw', 'lamb', 'lion')
#: The names the ``optimizer`` field takes
#: (:func:`bort_jax.training.create_optimizer` builds them).
OPTIMIZER_NAMES: tuple[str, ...] = tuple(
    name for family in OPTIMIZER_FAMILIES for name in (family, f'bort_{family}')
)

#: Fields that say how a run is executed, not what it computes: a run
#: resumes with other values of them (e.g. fewer data worker processes on
#: a smaller machine), with the same batches and results.
EXECUTION_FIELDS: tuple[str, ...] = ('data_workers', 'data_threads')

# Fields that must be positive, and fields that must not be negative.
_POSITIVE = (
    'epochs',
    'batch_size',
    'eval_batch_size',
    'learning_rate',
    'keep_checkpoints',
    'max_consecutive_nonfinite',
    'lr_decay_factor',
)
_NON_NEGATIVE = (
    'gamma',
    'weight_decay',
    'label_smoothing',
    'warmup_epochs',
    'seed',
    'train_examples',
    'eval_examples',
    'log_every_steps',
    'checkpoint_every_steps',
    'image_size',
    'data_threads',
    'data_workers',
    'lr_reference_batch_size',
    'momentum',
    'eps',
    'fsdp_min_size',
)
# Fields in [0, 1).
_UNIT_INTERVAL = ('b1', 'b2', 'label_smoothing')


def get_config() -> ml_collections.ConfigDict:
  """Every field with its default (a locked ConfigDict; see the module doc)."""
  config = ml_collections.ConfigDict()
  config.name = 'custom'
  # Data.
  config.dataset = 'mnist'
  config.model = 'mlp'
  config.model_kwargs = ml_collections.ConfigDict()
  config.image_size = 0
  config.augment = True
  config.train_examples = 0
  config.eval_examples = 0
  config.in_memory = True
  config.data_threads = 0
  config.data_workers = 0
  # Optimizer.
  config.optimizer = 'adamw'
  config.learning_rate = 1e-3
  config.lr_reference_batch_size = 0
  config.schedule = 'cosine'
  config.warmup_epochs = 0.0
  config.lr_decay_epochs = ()
  config.lr_decay_factor = 0.1
  config.weight_decay = 0.0
  config.momentum = 0.9
  config.nesterov = False
  config.b1 = 0.9
  config.b2 = 0.999
  config.eps = 1e-8
  config.label_smoothing = 0.0
  # Bort.
  config.gamma = 0.0
  # A float or the string 'adaptive': typed `object` so that either can be set.
  config.amplitude = ml_collections.FieldReference(1.0, field_type=object)
  config.bort_mode = 'l2-full'
  config.bort_exclude = ()
  # Loop.
  config.epochs = 1
  config.batch_size = 128
  config.eval_batch_size = 1000
  config.dtype = 'float32'
  config.seed = 0
  config.parallel = 'jit'
  config.param_sharding = 'replicated'
  config.fsdp_min_size = 2**18
  config.log_every_steps = 0
  config.checkpoint_every_steps = 0
  config.keep_checkpoints = 2
  # Faults.
  config.skip_nonfinite_steps = False
  config.max_consecutive_nonfinite = 10
  return lock(config)


def get_imagenet_config() -> ml_collections.ConfigDict:
  """What the ImageNet recipes share: data, bfloat16, Bort's ImageNet values.

  Bort gamma 1e-4 with the adaptive amplitude is the value of the authors'
  published ImageNet scripts (``docs/method.md``); the data is read from
  disk with 16 decoding threads; logs and checkpoints are also written
  within epochs.
  """
  config = get_config()
  config.dataset = 'imagenet2012'
  config.eval_batch_size = 512
  config.gamma = 1e-4
  config.amplitude = 'adaptive'
  config.dtype = 'bfloat16'
  config.in_memory = False
  config.data_workers = 8
  config.data_threads = 2
  config.log_every_steps = 500
  config.checkpoint_every_steps = 5000
  return config


def lock(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Locks ``config`` (no new fields) but keeps ``model_kwargs`` open."""
  config.lock()
  config.model_kwargs.unlock()
  return config


def field_names() -> tuple[str, ...]:
  """The names of the fields, in the order :func:`get_config` defines them."""
  return tuple(get_config().keys())


def _type_name(kind: type) -> str:
  return {
      float: 'a number',
      int: 'an integer',
      bool: 'a boolean',
      str: 'a string',
      tuple: 'a tuple',
  }.get(kind, kind.__name__)


def _check_type(name: str, value: Any, default: Any) -> None:
  if name == 'amplitude':
    if isinstance(value, bool) or not (
        isinstance(value, (int, float))
        and math.isfinite(value)
        and value > 0
        or value == 'adaptive'
    ):
      raise ValueError(
          f"amplitude must be a positive number or 'adaptive', got {value!r}"
      )
    return
  if isinstance(default, ml_collections.ConfigDict):
    if not isinstance(value, (ml_collections.ConfigDict, Mapping)):
      raise ValueError(f'{name} must be a mapping, got {value!r}')
    return
  kind = type(default)
  if kind is float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
  elif kind is int:
    ok = isinstance(value, int) and not isinstance(value, bool)
  else:
    ok = isinstance(value, kind)
  if not ok:
    raise ValueError(f'{name} must be {_type_name(kind)}, got {value!r}')


def check_optimizer_name(name: str) -> None:
  """Raises ``ValueError`` for a name not in :data:`OPTIMIZER_NAMES`.

  Example:
    >>> check_optimizer_name('bort_adam')
    Traceback (most recent call last):
    ...
    ValueError: unknown optimizer 'bort_adam'; valid optimizers: ['sgd', 'bort_sgd', 'adamw', 'bort_adamw', 'lamb', 'bort_lamb', 'lion', 'bort_lion']
  """
  if name not in OPTIMIZER_NAMES:
    raise ValueError(
        f'unknown optimizer {name!r}; valid optimizers: '
        f'{list(OPTIMIZER_NAMES)}'
    )


def _choice(name: str, value: Any, valid: tuple[str, ...]) -> None:
  if value not in valid:
    raise ValueError(f'{name} must be one of {list(valid)}, got {value!r}')


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Raises ``ValueError`` naming the field for values no run could use.

  Checks: every field known and present, each of its type, every number
  finite, the choices (``schedule``, ``parallel``, ``param_sharding``,
  ``dtype``), signs and ranges (``learning_rate``, ``keep_checkpoints``
  and the batch sizes positive; ``b1``, ``b2``, ``label_smoothing`` in
  [0, 1)), the ``bort_exclude`` entries (layer names or valid regular
  expressions; the names are resolved when the model is built), that
  ``fsdp`` goes with ``jit``, and the ``optimizer`` name
  (:func:`check_optimizer_name`). The model name and its arguments are
  checked where the model is built; what depends on the data and the devices
  (batch size against the data set and the device count, the model's
  arguments) by :mod:`bort_jax.training.preflight` before a run starts.

  Returns:
    ``config``, unchanged.

  Example:
    >>> from bort_jax.configs.base import get_config
    >>> from bort_jax.configs import validate
    >>> config = get_config()
    >>> config.schedule = 'linear'
    >>> validate(config)
    Traceback (most recent call last):
    ...
    ValueError: schedule must be one of ['cosine', 'step', 'constant'], got 'linear'
  """
  defaults = get_config()
  names = set(config.keys())
  unknown = sorted(names - set(defaults.keys()))
  if unknown:
    raise ValueError(
        f'unknown config field(s) {unknown}; valid fields: '
        f'{", ".join(defaults.keys())}'
    )
  missing = [name for name in defaults.keys() if name not in names]
  if missing:
    raise ValueError(f'config lacks the field(s) {missing}')
  for name in defaults.keys():
    _check_type(name, config[name], defaults[name])
  _choice('schedule', config.schedule, SCHEDULES)
  _choice('parallel', config.parallel, PARALLEL_MODES)
  _choice('param_sharding', config.param_sharding, PARAM_SHARDINGS)
  _choice('dtype', config.dtype, DTYPES)
  for name in defaults.keys():
    if isinstance(config[name], float) and not math.isfinite(config[name]):
      raise ValueError(f'{name} must be a finite number, got {config[name]}')
  for name in _POSITIVE:
    if config[name] <= 0:
      raise ValueError(f'{name} must be positive, got {config[name]}')
  for name in _NON_NEGATIVE:
    if config[name] < 0:
      raise ValueError(f'{name} must be non-negative, got {config[name]}')
  for name in _UNIT_INTERVAL:
    if not 0 <= config[name] < 1:
      raise ValueError(f'{name} must be in [0, 1), got {config[name]}')
  for epoch in config.lr_decay_epochs:
    if (
        isinstance(epoch, bool)
        or not isinstance(epoch, (int, float))
        or not math.isfinite(epoch)
        or epoch < 0
    ):
      raise ValueError(
          'lr_decay_epochs must hold non-negative numbers, got '
          f'{tuple(config.lr_decay_epochs)}'
      )
  for pattern in config.bort_exclude:
    try:
      re.compile(pattern)
    except (re.error, TypeError) as error:
      raise ValueError(
          f'bort_exclude: {pattern!r} is not a regular expression: {error}'
      ) from None
  if config.parallel == 'pmap' and config.param_sharding != 'replicated':
    raise ValueError('param_sharding=fsdp needs parallel=jit')
  check_optimizer_name(config.optimizer)
  return config


def to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """A JSON-ready dict of ``config`` (tuples become lists), as in ``config.json``."""
  return json.loads(json.dumps(config.to_dict()))


def from_dict(values: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """The base config with ``values`` set, validated: the inverse of :func:`to_dict`.

  Fields missing from ``values`` keep their defaults (a ``config.json``
  written before a field existed still loads).

  Raises:
    ValueError: unknown field, or a value of the wrong type (naming it).

  Example:
    >>> from bort_jax.configs import from_dict
    >>> from_dict({'epochs': 3, 'lr_decay_epochs': [30, 60]}).lr_decay_epochs
    (30, 60)
  """
  config = get_config()
  unknown = sorted(set(values) - set(config.keys()))
  if unknown:
    raise ValueError(
        f'unknown config field(s) {unknown}; valid fields: '
        f'{", ".join(config.keys())}'
    )
  for name, value in values.items():
    if name == 'model_kwargs':
      _check_type(name, value, config.model_kwargs)
      config.model_kwargs = ml_collections.ConfigDict(dict(value))
      continue
    if isinstance(config[name], tuple) and isinstance(value, list):
      value = tuple(value)
    _check_type(name, value, config[name])
    config[name] = value
  return validate(lock(config))


def replace(
    config: ml_collections.ConfigDict, **changes: Any
) -> ml_collections.ConfigDict:
  """A validated copy of ``config`` with ``changes``; ``config`` is unchanged.

  Example:
    >>> from bort_jax.configs import replace
    >>> from bort_jax.configs.base import get_config
    >>> replace(get_config(), epochs=3, amplitude='adaptive').amplitude
    'adaptive'
  """
  return from_dict({**config.to_dict(), **changes})
