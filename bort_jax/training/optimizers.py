"""Optimizers by name and learning-rate schedules.

Every optimizer decays the same leaves Bort constrains
(:func:`bort_jax.default_mask`: Dense/Conv/attention kernels), so a baseline
and its Bort run differ only in the Bort term: ``bort_adamw`` with
``gamma=0`` is ``adamw``.

==============  ==================================================================
name            chain
==============  ==================================================================
``sgd``         decay, momentum, lr (coupled decay, as PyTorch's SGD)
``bort_sgd``    Bort, decay, momentum, lr (BortS: the term joins the gradient)
``adamw``       adam, decay, lr
``bort_adamw``  adam, decay, Bort, lr (BortA: the term is decoupled)
``lamb``        adam, decay, trust ratio, lr
``bort_lamb``   adam, decay, Bort, trust ratio, lr
``lion``        lion, decay, lr
``bort_lion``   lion, decay, Bort, lr
==============  ==================================================================

Example:
  >>> tx = create_optimizer('bort_lamb', learning_rate=1e-3, weight_decay=0.05,
  ...                       gamma=1e-4)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import optax

import bort_jax
from bort_jax.training.config import TrainConfig

ScalarOrSchedule = optax.ScalarOrSchedule


def _sgd_base(hp: dict[str, Any]) -> optax.GradientTransformation:
  momentum = hp['momentum'] or None
  return optax.trace(decay=momentum, nesterov=hp['nesterov']) if momentum else optax.identity()


def _adam_base(hp: dict[str, Any]) -> optax.GradientTransformation:
  return optax.scale_by_adam(b1=hp['b1'], b2=hp['b2'], eps=hp['eps'])


def _lion_base(hp: dict[str, Any]) -> optax.GradientTransformation:
  return optax.scale_by_lion(b1=hp['b1'], b2=hp['b2'])


# family -> (direction from the gradient, whether Bort and decay join the
# gradient before it (coupled, SGD) or follow it (decoupled), post-scaling).
_FAMILIES: dict[str, tuple[Callable, bool, Callable | None]] = {
    'sgd': (_sgd_base, True, None),
    'adamw': (_adam_base, False, None),
    'lamb': (_adam_base, False, optax.scale_by_trust_ratio),
    'lion': (_lion_base, False, None),
}

#: The names :func:`create_optimizer` accepts.
OPTIMIZER_NAMES: tuple[str, ...] = tuple(
    name for family in _FAMILIES for name in (family, f'bort_{family}'))


def split_name(name: str) -> tuple[str, bool]:
  """``'bort_lamb'`` -> ``('lamb', True)``; raises for unknown names."""
  if name not in OPTIMIZER_NAMES:
    raise ValueError(f'unknown optimizer {name!r}; valid optimizers: {list(OPTIMIZER_NAMES)}')
  return name.removeprefix('bort_'), name.startswith('bort_')


def create_optimizer(
    name: str,
    *,
    learning_rate: ScalarOrSchedule,
    weight_decay: float = 0.0,
    gamma: float = 0.0,
    amplitude: bort_jax.optimizer.correction.Amplitude = 1.0,
    bort_mode: str = 'l2-full',
    bort_exclude: Sequence[str] = (),
    momentum: float = 0.9,
    nesterov: bool = False,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformationExtraArgs:
  """Builds a named optimizer, Bort or baseline (see the module's table).

  Args:
    name: one of :data:`OPTIMIZER_NAMES`.
    learning_rate: a float or an optax schedule.
    weight_decay: decay coefficient, applied to :func:`bort_jax.default_mask`
      leaves only (coupled for SGD, decoupled otherwise).
    gamma: Bort coefficient (``bort_*`` names only).
    amplitude: Bort amplitude, a float or ``'adaptive'``.
    bort_mode: Bort correction mode.
    bort_exclude: regular expressions naming kernels left out of the Bort
      term (:func:`bort_jax.kernels_except`); weight decay still applies.
    momentum: SGD momentum (0: none).
    nesterov: SGD Nesterov momentum.
    b1, b2: moment decays of Adam/LAMB/Lion.
    eps: Adam/LAMB epsilon.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; its ``update`` needs
    ``params`` (weight decay and Bort read them).

  Raises:
    ValueError: unknown name (the message lists the valid ones).

  Example:
    >>> import jax.numpy as jnp
    >>> tx = create_optimizer('bort_sgd', learning_rate=0.1, gamma=0.05)
    >>> params = {'dense': {'kernel': jnp.eye(3), 'bias': jnp.zeros(3)}}
    >>> updates, _ = tx.update(params, tx.init(params), params)
  """
  family, with_bort = split_name(name)
  base, coupled, post = _FAMILIES[family]
  hyperparams = dict(momentum=momentum, nesterov=nesterov, b1=b1, b2=b2, eps=eps)
  decay = optax.add_decayed_weights(weight_decay, mask=bort_jax.default_mask)
  bort_mask = bort_jax.kernels_except(*bort_exclude) if bort_exclude else None
  bort = (bort_jax.add_bort_correction(gamma, amplitude=amplitude, mode=bort_mode,
                                       mask=bort_mask)
          if with_bort else optax.identity())
  if coupled:
    transforms = [bort, decay, base(hyperparams)]
  else:
    transforms = [base(hyperparams), decay, bort]
  if post is not None:
    transforms.append(post())
  transforms.append(optax.scale_by_learning_rate(learning_rate))
  return optax.chain(*transforms)


def create_learning_rate_schedule(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
  """The learning rate of each step: linear warmup, then the config's schedule.

  Args:
    config: uses ``peak_learning_rate``, ``schedule``, ``warmup_epochs``,
      ``epochs``, ``lr_decay_epochs``, ``lr_decay_factor``.
    steps_per_epoch: optimizer steps per epoch.

  Returns:
    An optax schedule of the step count.

  Example:
    >>> schedule = create_learning_rate_schedule(
    ...     TrainConfig(learning_rate=0.1, epochs=10, warmup_epochs=1), 100)
    >>> [round(float(schedule(step)), 4) for step in (0, 50, 100, 550, 1000)]
    [0.0, 0.05, 0.1, 0.05, 0.0]
  """
  peak = config.peak_learning_rate
  warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))
  total_steps = config.epochs * steps_per_epoch
  if config.schedule == 'cosine':
    main = optax.cosine_decay_schedule(peak, max(total_steps - warmup_steps, 1))
  elif config.schedule == 'step':
    main = optax.piecewise_constant_schedule(peak, {
        epoch * steps_per_epoch - warmup_steps: config.lr_decay_factor
        for epoch in config.lr_decay_epochs})
  else:
    main = optax.constant_schedule(peak)
  if not warmup_steps:
    return main
  warmup = optax.linear_schedule(0.0, peak, warmup_steps)
  return optax.join_schedules([warmup, main], [warmup_steps])


def optimizer_from_config(
    config: TrainConfig, steps_per_epoch: int
) -> tuple[optax.GradientTransformationExtraArgs, optax.Schedule]:
  """The config's optimizer with its learning-rate schedule.

  Returns:
    ``(tx, schedule)``.
  """
  schedule = create_learning_rate_schedule(config, steps_per_epoch)
  tx = create_optimizer(
      config.optimizer,
      learning_rate=schedule,
      weight_decay=config.weight_decay,
      gamma=config.gamma,
      amplitude=config.amplitude,
      bort_mode=config.bort_mode,
      bort_exclude=config.bort_exclude,
      momentum=config.momentum,
      nesterov=config.nesterov,
      b1=config.b1,
      b2=config.b2,
      eps=config.eps,
  )
  return tx, schedule
