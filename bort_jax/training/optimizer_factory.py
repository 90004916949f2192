"""Optimizers by name, built from a config, with their learning-rate schedules.

Every optimizer decays the same leaves Bort constrains
(:func:`bort_jax.default_mask`: Dense/Conv/attention kernels), so a baseline
and its Bort run differ only in the Bort term ``gamma * Delta(theta)`` (see
``docs/method.md``): ``bort_adamw`` with ``gamma=0`` updates exactly as
``adamw``. The Bort optimizers are the library's:

==============  =============================================================
name            optimizer
==============  =============================================================
``sgd``         decay, then ``optax.sgd`` (coupled decay, as PyTorch's SGD)
``bort_sgd``    :func:`bort_jax.bort_sgd` (BortS: the term joins the gradient)
``adamw``       ``optax.adamw``
``bort_adamw``  :func:`bort_jax.bort_adamw` (BortA: the term is decoupled)
``lamb``        ``optax.lamb``
``bort_lamb``   adam, decay, :func:`bort_jax.add_bort_correction`, trust
                ratio, lr
``lion``        ``optax.lion``
``bort_lion``   lion, decay, :func:`bort_jax.add_bort_correction`, lr
==============  =============================================================

(This module is named for what it does, building optimizers from names and
configs, to keep it apart from :mod:`bort_jax.optimizer`, the Bort
transformations themselves.)

Example:
  >>> from bort_jax.training import create_optimizer
  >>> tx = create_optimizer('bort_lamb', learning_rate=1e-3, weight_decay=0.05,
  ...                       gamma=1e-4)
"""

from __future__ import annotations

from collections.abc import Sequence

import ml_collections
import optax

import bort_jax
from bort_jax.configs import base as configs_base
from bort_jax.training import modeling

ScalarOrSchedule = optax.ScalarOrSchedule

#: The optimizer families; each has a baseline ``NAME`` and ``bort_NAME``.
FAMILIES: tuple[str, ...] = configs_base.OPTIMIZER_FAMILIES

#: The names :func:`create_optimizer` accepts (the config's ``optimizer``
#: field takes the same, :func:`bort_jax.configs.validate` checks it).
OPTIMIZER_NAMES: tuple[str, ...] = configs_base.OPTIMIZER_NAMES


def split_name(name: str) -> tuple[str, bool]:
  """``'bort_lamb'`` -> ``('lamb', True)``; raises for unknown names.

  Raises:
    ValueError: unknown name; the message lists the valid ones.
  """
  configs_base.check_optimizer_name(name)
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
    amplitude: Bort amplitude, a positive float or ``'adaptive'``.
    bort_mode: Bort correction mode (:data:`bort_jax.MODES`).
    bort_exclude: regular expressions naming kernels left out of the Bort
      term (:func:`bort_jax.kernels_except`); weight decay still applies.
    momentum: SGD momentum (0: none).
    nesterov: SGD Nesterov momentum.
    b1: first-moment decay of Adam/LAMB/Lion.
    b2: second-moment decay of Adam/LAMB/Lion.
    eps: Adam/LAMB epsilon.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; its ``update`` needs
    ``params`` (weight decay and Bort read them).

  Raises:
    ValueError: unknown name (the message lists the valid ones).

  Example:
    >>> import jax.numpy as jnp
    >>> from bort_jax.training import create_optimizer
    >>> tx = create_optimizer('bort_sgd', learning_rate=0.1, gamma=0.05)
    >>> params = {'dense': {'kernel': jnp.eye(3), 'bias': jnp.zeros(3)}}
    >>> updates, _ = tx.update(params, tx.init(params), params)
  """
  family, with_bort = split_name(name)
  decay_mask = bort_jax.default_mask
  bort = dict(
      gamma=gamma,
      amplitude=amplitude,
      mode=bort_mode,
      mask=bort_jax.kernels_except(*bort_exclude) if bort_exclude else None,
  )
  momentum = momentum or None
  if family == 'sgd':
    if with_bort:
      return bort_jax.bort_sgd(
          learning_rate,
          momentum=momentum,
          nesterov=nesterov,
          weight_decay=weight_decay,
          weight_decay_mask=decay_mask,
          **bort,
      )
    return optax.chain(
        optax.add_decayed_weights(weight_decay, decay_mask),
        optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov),
    )
  if family == 'adamw':
    if with_bort:
      return bort_jax.bort_adamw(
          learning_rate,
          b1=b1,
          b2=b2,
          eps=eps,
          weight_decay=weight_decay,
          weight_decay_mask=decay_mask,
          **bort,
      )
    return optax.adamw(
        learning_rate,
        b1=b1,
        b2=b2,
        eps=eps,
        weight_decay=weight_decay,
        mask=decay_mask,
    )
  if not with_bort:
    if family == 'lamb':
      return optax.lamb(
          learning_rate,
          b1=b1,
          b2=b2,
          eps=eps,
          weight_decay=weight_decay,
          mask=decay_mask,
      )
    return optax.lion(
        learning_rate, b1=b1, b2=b2, weight_decay=weight_decay, mask=decay_mask
    )
  # LAMB and Lion: the Bort term where the optimizer adds its weight decay.
  gamma = bort.pop('gamma')
  direction = (
      optax.scale_by_adam(b1=b1, b2=b2, eps=eps)
      if family == 'lamb'
      else optax.scale_by_lion(b1=b1, b2=b2)
  )
  return optax.chain(
      direction,
      optax.add_decayed_weights(weight_decay, decay_mask),
      bort_jax.add_bort_correction(gamma, **bort),
      optax.scale_by_trust_ratio() if family == 'lamb' else optax.identity(),
      optax.scale_by_learning_rate(learning_rate),
  )


def peak_learning_rate(config: ml_collections.ConfigDict) -> float:
  """``learning_rate``, times ``batch_size / lr_reference_batch_size`` if set.

  Example:
    >>> from bort_jax import configs
    >>> from bort_jax.training import peak_learning_rate
    >>> config = configs.get_config('imagenet_deit_s')
    >>> round(peak_learning_rate(configs.replace(config, batch_size=2048)), 6)
    0.002
  """
  if config.lr_reference_batch_size:
    return (
        config.learning_rate
        * config.batch_size
        / config.lr_reference_batch_size
    )
  return config.learning_rate


def create_learning_rate_schedule(
    config: ml_collections.ConfigDict, steps_per_epoch: int
) -> optax.Schedule:
  """The learning rate of each step: linear warmup, then the config's schedule.

  Args:
    config: uses ``learning_rate``, ``lr_reference_batch_size``,
      ``batch_size``, ``schedule``, ``warmup_epochs``, ``epochs``,
      ``lr_decay_epochs`` and ``lr_decay_factor``.
    steps_per_epoch: optimizer steps per epoch.

  Returns:
    An optax schedule of the step count.

  Example:
    >>> from bort_jax import configs
    >>> from bort_jax.training import create_learning_rate_schedule
    >>> config = configs.replace(configs.base.get_config(), learning_rate=0.1,
    ...                          epochs=10, warmup_epochs=1.0)
    >>> schedule = create_learning_rate_schedule(config, 100)
    >>> [round(float(schedule(step)), 4) for step in (0, 50, 100, 550, 1000)]
    [0.0, 0.05, 0.1, 0.05, 0.0]
  """
  peak = peak_learning_rate(config)
  warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))
  total_steps = config.epochs * steps_per_epoch
  if config.schedule == 'cosine':
    main = optax.cosine_decay_schedule(peak, max(total_steps - warmup_steps, 1))
  elif config.schedule == 'step':
    main = optax.piecewise_constant_schedule(
        peak,
        {
            epoch * steps_per_epoch - warmup_steps: config.lr_decay_factor
            for epoch in config.lr_decay_epochs
        },
    )
  else:
    main = optax.constant_schedule(peak)
  if not warmup_steps:
    return main
  warmup = optax.linear_schedule(0.0, peak, warmup_steps)
  return optax.join_schedules([warmup, main], [warmup_steps])


def optimizer_from_config(
    config: ml_collections.ConfigDict, steps_per_epoch: int
) -> tuple[optax.GradientTransformationExtraArgs, optax.Schedule]:
  """The config's optimizer with its learning-rate schedule.

  Args:
    config: a training config (:mod:`bort_jax.configs`).
    steps_per_epoch: optimizer steps per epoch (for the schedule).

  Returns:
    ``(tx, schedule)``.

  Raises:
    ConfigError: a ``bort_exclude`` layer name the model does not have
      (:func:`bort_jax.training.modeling.bort_exclude_patterns`).
  """
  schedule = create_learning_rate_schedule(config, steps_per_epoch)
  tx = create_optimizer(
      config.optimizer,
      learning_rate=schedule,
      weight_decay=config.weight_decay,
      gamma=config.gamma,
      amplitude=config.amplitude,
      bort_mode=config.bort_mode,
      bort_exclude=modeling.bort_exclude_patterns(config),
      momentum=config.momentum,
      nesterov=config.nesterov,
      b1=config.b1,
      b2=config.b2,
      eps=config.eps,
  )
  return tx, schedule
