"""The train state and pure train/eval steps for any NNX classifier.

The model is split once into a static ``graphdef`` and array state; the steps
are pure functions of ``(TrainState, batch)`` that can be compiled with
``jax.jit`` (with shardings over a device mesh) or ``jax.pmap``.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

Batch = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  """Everything a training run carries from step to step.

  Attributes:
    step: number of optimizer updates done.
    params: the model's ``nnx.Param`` state.
    model_state: every other model variable (BatchNorm statistics, RNG state).
    opt_state: the optax optimizer state.
    rng: PRNG key for stochastic layers and augmentation on device.
  """

  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any
  rng: jax.Array


@flax.struct.dataclass
class ModelDefinition:
  """The static halves of a model split in train mode and in eval mode."""

  train: Any = flax.struct.field(pytree_node=False)
  eval: Any = flax.struct.field(pytree_node=False)


def create_train_state(
    model: nnx.Module, tx: optax.GradientTransformation, rng: jax.Array
) -> tuple[ModelDefinition, TrainState]:
  """Splits ``model`` and initialises the optimizer.

  Args:
    model: an NNX classifier (``model(images) -> logits``).
    tx: the optax optimizer (Bort transformations need ``params`` in
      ``update``, which the train step passes).
    rng: PRNG key carried in the state.

  Returns:
    ``(definition, state)``: the static graph definitions (train/eval mode) and
    the initial :class:`TrainState`.
  """
  model.train()
  train_def, params, model_state = nnx.split(model, nnx.Param, ...)
  model.eval()
  eval_def, _, _ = nnx.split(model, nnx.Param, ...)
  model.train()
  state = TrainState(
      step=jnp.zeros([], jnp.int32),
      params=params,
      model_state=model_state,
      opt_state=tx.init(params),
      rng=rng,
  )
  return ModelDefinition(train=train_def, eval=eval_def), state


def cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    num_classes: int,
    label_smoothing: float = 0.0,
) -> jax.Array:
  """Per-example softmax cross-entropy with optional label smoothing, in float32."""
  targets = (
      optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
      if (label_smoothing)
      else jax.nn.one_hot(labels, num_classes)
  )
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def _is_key(x) -> bool:
  return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _fold_device_into_keys(model_state, axis_name: str):
  """Each pmapped device draws its own dropout masks from the replicated keys."""
  index = jax.lax.axis_index(axis_name)
  return jax.tree.map(
      lambda x: jax.random.fold_in(x, index) if _is_key(x) else x, model_state
  )


def _average_statistics(new_state, old_state, axis_name: str):
  """Averages floating statistics (BatchNorm) over devices; keeps RNG keys.

  RNG counters advance identically on every device; keys are restored to the
  replicated ones :func:`_fold_device_into_keys` derived the per-device keys
  from.
  """

  def combine(new, old):
    if _is_key(old):
      return old
    if jnp.issubdtype(new.dtype, jnp.floating):
      return jax.lax.pmean(new, axis_name)
    return new

  return jax.tree.map(combine, new_state, old_state)


def make_train_step(
    definition: ModelDefinition,
    tx: optax.GradientTransformation,
    *,
    label_smoothing: float = 0.0,
    axis_name: str | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
  """A pure train step: forward, backward, optimizer update.

  Args:
    definition: from :func:`create_train_state`.
    tx: the optimizer the state was initialised with.
    label_smoothing: label-smoothing coefficient.
    axis_name: under ``jax.pmap``, the mapped axis name: gradients, metrics
      and BatchNorm statistics are averaged over it, and each device folds
      its index into the model's RNG keys (distinct dropout masks per
      device). ``None`` under ``jax.jit`` (the compiler inserts the
      collectives a sharded batch needs).

  Returns:
    ``step(state, batch) -> (state, metrics)`` with ``batch`` holding
    ``image`` [B, H, W, C], ``label`` [B] and optionally ``mask`` [B]
    (examples with mask 0 do not count).
  """

  def loss_fn(params, model_state, batch):
    if axis_name is not None:
      model_state = _fold_device_into_keys(model_state, axis_name)
    model = nnx.merge(definition.train, params, model_state, copy=True)
    logits = model(batch['image'])
    num_classes = logits.shape[-1]
    losses = cross_entropy(logits, batch['label'], num_classes, label_smoothing)
    weights = batch.get('mask', jnp.ones_like(losses)).astype(jnp.float32)
    loss = jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)
    correct = jnp.sum((jnp.argmax(logits, -1) == batch['label']) * weights)
    _, _, new_model_state = nnx.split(model, nnx.Param, ...)
    return loss, (new_model_state, correct, jnp.sum(weights))

  def step(state: TrainState, batch: Batch):
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (model_state, correct, count)), grads = grad_fn(
        state.params, state.model_state, batch
    )
    if axis_name is not None:
      grads = jax.lax.pmean(grads, axis_name)
      loss = jax.lax.pmean(loss, axis_name)
      correct, count = jax.lax.psum((correct, count), axis_name)
      model_state = _average_statistics(
          model_state, state.model_state, axis_name
      )
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
        step=state.step + 1,
        params=params,
        model_state=model_state,
        opt_state=opt_state,
    )
    return new_state, {
        'loss': loss,
        'accuracy': correct / jnp.maximum(count, 1.0),
    }

  return step


def make_eval_step(
    definition: ModelDefinition, *, axis_name: str | None = None
) -> Callable[[TrainState, Batch], dict[str, jax.Array]]:
  """A pure eval step returning *sums* (loss, correct, count) over real examples.

  Summing rather than averaging lets padded batches (``mask``) count every
  eval example exactly once.
  """

  def step(state: TrainState, batch: Batch):
    model = nnx.merge(
        definition.eval, state.params, state.model_state, copy=True
    )
    logits = model(batch['image'])
    losses = cross_entropy(logits, batch['label'], logits.shape[-1])
    weights = batch.get('mask', jnp.ones_like(losses)).astype(jnp.float32)
    sums = {
        'loss_sum': jnp.sum(losses * weights),
        'correct': jnp.sum(
            (jnp.argmax(logits, -1) == batch['label']) * weights
        ),
        'count': jnp.sum(weights),
    }
    if axis_name is not None:
      sums = jax.lax.psum(sums, axis_name)
    return sums

  return step
