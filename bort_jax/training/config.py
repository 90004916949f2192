"""The training configuration: one frozen dataclass, overridable by name.

Every experiment is a :class:`TrainConfig` returned by a config module's
``get_config()`` (see :mod:`bort_jax.training.configs`). Command-line
overrides are ``field=value`` strings, converted to the field's declared type::

  >>> config = TrainConfig(dataset='mnist', model='mlp')
  >>> config = override(config, ['epochs=3', 'amplitude=adaptive', 'dtype=bfloat16'])
  >>> config.epochs, config.amplitude, config.dtype
  (3, 'adaptive', 'bfloat16')
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Union

from bort_jax.optimizer.masking import kernels_except

SCHEDULES = ('cosine', 'step', 'constant')
PARALLEL_MODES = ('jit', 'pmap')
PARAM_SHARDINGS = ('replicated', 'fsdp')
DTYPES = ('float32', 'bfloat16')


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Hyperparameters and settings of one training run.

  Attributes:
    name: the config's name (recorded in ``config.json``).
    dataset: ``mnist``, ``cifar10`` or ``imagenet2012``.
    model: a :data:`bort_jax.models.MODEL_NAMES` entry.
    model_kwargs: extra model constructor arguments (the input shape
      arguments are derived from the data set unless given here).
    image_size: train/eval resolution of ImageNet (0: the data set's, 224).
    augment: use the data set's training augmentation.
    train_examples: train on the first N examples only (0: all).
    eval_examples: evaluate on the first N examples only (0: all).
    in_memory: decode the splits into memory (MNIST/CIFAR-10).
    data_threads: threads decoding/resizing images (ImageNet).
    optimizer: a :data:`bort_jax.training.optimizers.OPTIMIZER_NAMES` entry.
    learning_rate: peak learning rate (see ``lr_reference_batch_size``).
    lr_reference_batch_size: if positive, the peak learning rate is
      ``learning_rate * batch_size / lr_reference_batch_size`` (linear
      scaling rule); 0 uses ``learning_rate`` as it is.
    schedule: ``cosine`` (to 0 at the end), ``step`` (multiply by
      ``lr_decay_factor`` at each of ``lr_decay_epochs``) or ``constant``.
    warmup_epochs: linear warmup from 0, in epochs (may be fractional).
    lr_decay_epochs: epochs at which the ``step`` schedule decays.
    lr_decay_factor: factor of each ``step`` decay.
    weight_decay: weight decay, applied to the kernels Bort constrains only
      (:func:`bort_jax.default_mask`), for every optimizer.
    momentum: SGD momentum (0: none).
    nesterov: Nesterov momentum for SGD.
    b1: first-moment decay of Adam/LAMB/Lion.
    b2: second-moment decay of Adam/LAMB/Lion.
    eps: Adam/LAMB epsilon.
    gamma: Bort coefficient (used by the ``bort_*`` optimizers only).
    amplitude: Bort amplitude ``a`` (a float) or ``'adaptive'``; also the
      amplitude the orthogonality figures are measured against.
    bort_mode: Bort correction mode (see :data:`bort_jax.MODES`).
    bort_exclude: regular expressions; kernels whose path (``layers/3/kernel``,
      ``head/kernel``) matches one are left out of the Bort term (see
      :func:`bort_jax.kernels_except`); weight decay still applies to them.
    label_smoothing: label-smoothing coefficient of the training loss.
    epochs: number of training epochs.
    batch_size: global training batch size (all devices and processes).
    eval_batch_size: global evaluation batch size.
    dtype: computation dtype, ``float32`` or ``bfloat16`` (parameters and
      optimizer state stay float32).
    seed: seed of the initialisation, data order and augmentation.
    parallel: ``jit`` (one program over a device mesh, batch sharded on its
      ``data`` axis) or ``pmap``.
    param_sharding: with ``jit``: ``replicated`` or ``fsdp`` (each large
      array sharded over ``data`` along its largest divisible axis).
    fsdp_min_size: arrays with fewer elements stay replicated under ``fsdp``.
    log_every_steps: also log training metrics every N steps (0: per epoch).
    checkpoint_every_steps: also checkpoint every N steps (0: per epoch).
    keep_checkpoints: checkpoints kept on disk.
  """

  name: str = 'custom'
  # Data.
  dataset: str = 'mnist'
  model: str = 'mlp'
  model_kwargs: dict = dataclasses.field(default_factory=dict)
  image_size: int = 0
  augment: bool = True
  train_examples: int = 0
  eval_examples: int = 0
  in_memory: bool = True
  data_threads: int = 0
  # Optimizer.
  optimizer: str = 'adamw'
  learning_rate: float = 1e-3
  lr_reference_batch_size: int = 0
  schedule: str = 'cosine'
  warmup_epochs: float = 0.0
  lr_decay_epochs: tuple = ()
  lr_decay_factor: float = 0.1
  weight_decay: float = 0.0
  momentum: float = 0.9
  nesterov: bool = False
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  gamma: float = 0.0
  amplitude: Union[float, str] = 1.0
  bort_mode: str = 'l2-full'
  bort_exclude: tuple = ()
  label_smoothing: float = 0.0
  # Loop.
  epochs: int = 1
  batch_size: int = 128
  eval_batch_size: int = 1000
  dtype: str = 'float32'
  seed: int = 0
  parallel: str = 'jit'
  param_sharding: str = 'replicated'
  fsdp_min_size: int = 2**18
  log_every_steps: int = 0
  checkpoint_every_steps: int = 0
  keep_checkpoints: int = 2

  def __post_init__(self):
    check_config(self)

  @property
  def peak_learning_rate(self) -> float:
    """``learning_rate``, scaled by ``batch_size / lr_reference_batch_size`` if set."""
    if self.lr_reference_batch_size:
      return self.learning_rate * self.batch_size / self.lr_reference_batch_size
    return self.learning_rate

  def to_dict(self) -> dict[str, Any]:
    """A JSON-serialisable dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(self)))

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
    """The inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
    _check_names(values)
    return cls(**{name: _coerce(name, value) for name, value in values.items()})


def _choice(name: str, value: Any, valid: Iterable[str]) -> None:
  if value not in valid:
    raise ValueError(f'{name} must be one of {list(valid)}, got {value!r}')


def check_config(config: TrainConfig) -> None:
  """Raises ``ValueError`` for values no run could use."""
  _choice('schedule', config.schedule, SCHEDULES)
  _choice('parallel', config.parallel, PARALLEL_MODES)
  _choice('param_sharding', config.param_sharding, PARAM_SHARDINGS)
  _choice('dtype', config.dtype, DTYPES)
  if isinstance(config.amplitude, str) and config.amplitude != 'adaptive':
    raise ValueError(f"amplitude must be a positive float or 'adaptive', got {config.amplitude!r}")
  for name in ('epochs', 'batch_size', 'eval_batch_size'):
    if getattr(config, name) <= 0:
      raise ValueError(f'{name} must be positive, got {getattr(config, name)}')
  for name in ('gamma', 'weight_decay', 'label_smoothing', 'warmup_epochs', 'seed',
               'train_examples', 'eval_examples', 'log_every_steps',
               'checkpoint_every_steps'):
    if getattr(config, name) < 0:
      raise ValueError(f'{name} must be non-negative, got {getattr(config, name)}')
  if config.bort_exclude:
    kernels_except(*config.bort_exclude)  # raises for a pattern that is not a regex
  if config.parallel == 'pmap' and config.param_sharding != 'replicated':
    raise ValueError('param_sharding=fsdp needs parallel=jit')


def field_names() -> tuple[str, ...]:
  """The names :func:`override` accepts."""
  return tuple(f.name for f in dataclasses.fields(TrainConfig))


def _check_names(names: Iterable[str]) -> None:
  unknown = sorted(set(names) - set(field_names()))
  if unknown:
    raise ValueError(
        f'unknown config field(s) {unknown}; valid fields: {", ".join(field_names())}')


def _field_type(name: str) -> Any:
  return typing.get_type_hints(TrainConfig)[name]


def _parse_bool(text: str) -> bool:
  lowered = text.strip().lower()
  if lowered in ('1', 'true', 'yes', 'on'):
    return True
  if lowered in ('0', 'false', 'no', 'off'):
    return False
  raise ValueError(f'not a boolean: {text!r}')


def _parse_float_or_str(text: str) -> float | str:
  try:
    return float(text)
  except ValueError:
    return text


def _coerce(name: str, value: Any) -> Any:
  """``value`` (a string from the command line, or JSON) as ``name``'s type."""
  kind = _field_type(name)
  if typing.get_origin(kind) in (Union, types.UnionType):  # amplitude: float | str
    return _parse_float_or_str(value) if isinstance(value, str) else float(value)
  if kind in (dict, tuple):
    parsed = json.loads(value) if isinstance(value, str) else value
    if kind is tuple and isinstance(parsed, (int, float)):
      parsed = [parsed]
    if not isinstance(parsed, (dict if kind is dict else (list, tuple))):
      raise ValueError(f'expected a JSON {"object" if kind is dict else "list"}')
    return kind(parsed)
  if kind is bool:
    return _parse_bool(value) if isinstance(value, str) else bool(value)
  if kind is int and isinstance(value, str):
    number = float(value)  # accepts 1e3
    if number != int(number):
      raise ValueError(f'not an integer: {value!r}')
    return int(number)
  return kind(value)


def parse_assignment(assignment: str) -> tuple[str, str]:
  """``'field=value'`` -> ``('field', 'value')``."""
  name, separator, value = assignment.partition('=')
  if not separator or not name.strip():
    raise ValueError(f'expected field=value, got {assignment!r}')
  return name.strip(), value.strip()


def override(config: TrainConfig, assignments: Iterable[str]) -> TrainConfig:
  """Returns ``config`` with ``field=value`` assignments applied.

  Values are converted to the field's type: ints and floats (``1e-3``),
  booleans (``true/false/1/0/yes/no``), JSON for dicts and tuples
  (``model_kwargs={"width": 8}``, ``lr_decay_epochs=[30,60]``), and
  ``amplitude`` is a float or ``adaptive``.

  Args:
    config: the config to start from.
    assignments: ``'field=value'`` strings; later ones win.

  Returns:
    A new :class:`TrainConfig`.

  Raises:
    ValueError: malformed assignment, unknown field (the message lists the
      valid ones) or a value that does not convert.

  Example:
    >>> override(TrainConfig(), ['lr_decay_epochs=[30, 60]']).lr_decay_epochs
    (30, 60)
  """
  changes = {}
  for assignment in assignments:
    name, text = parse_assignment(assignment)
    _check_names([name])
    try:
      changes[name] = _coerce(name, text)
    except (TypeError, ValueError) as error:
      raise ValueError(
          f'cannot set {name} ({_field_type(name)}) to {text!r}: {error}') from None
  return dataclasses.replace(config, **changes)
