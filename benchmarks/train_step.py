"""Train-step time of ResNet-50 / DeiT-S with and without Bort, side by side.

One jitted, donated train step (forward, backward, optimizer update) on
synthetic ImageNet-shaped data, parameters in float32, compute in
``--dtype`` (bfloat16 by default). Every optimizer is timed in the same run,
interleaved, and reported as ms/step, img/s and the ratio to its baseline:
``adamw`` for the AdamW family, ``sgd`` (momentum, coupled decay) for SGD.

  python benchmarks/train_step.py --models resnet50 deit_s --batch-size 128
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import optax
from flax import nnx
import timing

import bort_jax
from bort_jax import models
from bort_jax.training import step as training_step

WEIGHT_DECAY = 0.05


def optimizers(
    gamma: float,
) -> dict[str, tuple[str, optax.GradientTransformation]]:
  """name -> (baseline name, optimizer)."""
  return {
      'adamw': ('adamw', optax.adamw(1e-3, weight_decay=WEIGHT_DECAY)),
      # The same program compiled a second time: its ratio to ``adamw`` is the
      # compile-to-compile spread that a Bort ratio has to be read against.
      'adamw recompiled': (
          'adamw',
          optax.adamw(1e-3, weight_decay=WEIGHT_DECAY),
      ),
      'bort_adamw': (
          'adamw',
          bort_jax.bort_adamw(1e-3, gamma=gamma, weight_decay=WEIGHT_DECAY),
      ),
      'bort_adamw adaptive': (
          'adamw',
          bort_jax.bort_adamw(
              1e-3, gamma=gamma, weight_decay=WEIGHT_DECAY, amplitude='adaptive'
          ),
      ),
      # Kernels of equal shape batched is the default; one by one for comparison.
      'bort_adamw one by one': (
          'adamw',
          bort_jax.bort_adamw(
              1e-3, gamma=gamma, weight_decay=WEIGHT_DECAY, batch_kernels=False
          ),
      ),
      'sgd': ('sgd', _sgd()),
      'sgd recompiled': ('sgd', _sgd()),
      'bort_sgd': (
          'sgd',
          bort_jax.bort_sgd(
              0.1, gamma=gamma, momentum=0.9, weight_decay=WEIGHT_DECAY
          ),
      ),
      'bort_sgd one by one': (
          'sgd',
          bort_jax.bort_sgd(
              0.1,
              gamma=gamma,
              momentum=0.9,
              weight_decay=WEIGHT_DECAY,
              batch_kernels=False,
          ),
      ),
      'bort_sgd barrier': (
          'sgd',
          optax.chain(
              bort_jax.add_bort_correction(gamma),
              _barrier(),
              optax.add_decayed_weights(WEIGHT_DECAY),
              optax.sgd(0.1, momentum=0.9),
          ),
      ),
  }


def _sgd() -> optax.GradientTransformation:
  """``optax.sgd`` with momentum and coupled weight decay, as BortS has."""
  return optax.chain(
      optax.add_decayed_weights(WEIGHT_DECAY), optax.sgd(0.1, momentum=0.9)
  )


def _barrier() -> optax.GradientTransformation:
  """Experiment: an optimisation barrier between the Bort term and the rest."""
  return optax.stateless(
      lambda updates, params: jax.lax.optimization_barrier(updates)
  )


def make_runner(model_name, tx, batch, dtype, num_classes):
  image_size = batch['image'].shape[1]
  extra = (
      {'image_size': image_size}
      if model_name.startswith(('deit', 'vit'))
      else {}
  )
  model = models.create_model(
      model_name,
      num_classes=num_classes,
      rngs=nnx.Rngs(0),
      dtype=dtype,
      **extra,
  )
  definition, state = training_step.create_train_state(
      model, tx, jax.random.key(0)
  )
  step = jax.jit(
      training_step.make_train_step(definition, tx), donate_argnums=0
  )
  return timing.step_runner(step, state, batch)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', nargs='+', default=['resnet50', 'deit_s'])
  parser.add_argument(
      '--optimizers',
      nargs='+',
      default=list(optimizers(0.0)),
      choices=list(optimizers(0.0)),
  )
  parser.add_argument('--batch-size', type=int, default=128)
  parser.add_argument('--image-size', type=int, default=224)
  parser.add_argument('--num-classes', type=int, default=1000)
  parser.add_argument(
      '--dtype', default='bfloat16', choices=['bfloat16', 'float32']
  )
  parser.add_argument('--gamma', type=float, default=1e-4)
  parser.add_argument('--iterations', type=int, default=10)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--json', help='also write the rows to this file')
  args = parser.parse_args(argv)

  device = jax.devices()[0]
  dtype = jnp.dtype(args.dtype)
  batch = {
      'image': jax.random.normal(
          jax.random.key(1),
          (args.batch_size, args.image_size, args.image_size, 3),
          jnp.float32,
      ),
      'label': jax.random.randint(
          jax.random.key(2), (args.batch_size,), 0, args.num_classes
      ),
  }
  print(
      f'# {device.platform}: {device.device_kind}; jax {jax.__version__}; batch '
      f'{args.batch_size} x {args.image_size}^2, compute {dtype.name}, params float32; '
      f'{args.iterations} steps x {args.repeats} interleaved repeats, median',
      flush=True,
  )
  print('| model | optimizer | ms / step | img / s | vs baseline |')
  print('|---|---|---|---|---|', flush=True)
  rows = []
  chosen = {
      k: v for k, v in optimizers(args.gamma).items() if k in args.optimizers
  }
  for model_name in args.models:
    runners = {
        name: make_runner(model_name, tx, batch, dtype, args.num_classes)
        for name, (_, tx) in chosen.items()
    }
    medians = timing.interleaved_medians(runners, args.iterations, args.repeats)
    for name, median in medians.items():
      baseline = chosen[name][0]
      ratio = (
          median / medians[baseline] if baseline in medians else float('nan')
      )
      row = dict(
          model=model_name,
          optimizer=name,
          ms=1e3 * median,
          images_per_s=args.batch_size / median,
          ratio=ratio,
      )
      rows.append(row)
      print(
          f"| {model_name} | {name} | {row['ms']:.2f} | {row['images_per_s']:.0f} | "
          f'{ratio:.3f}x |',
          flush=True,
      )
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(
          dict(device=str(device.device_kind), args=vars(args), rows=rows),
          f,
          indent=1,
      )


if __name__ == '__main__':
  main()
