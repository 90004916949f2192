"""MNIST train-step speed on CPU: adamw vs bort_adamw, side by side.

The steps ``bort-train`` runs for the ``mnist_mlp`` and ``mnist_cnn`` configs
(their model, batch size and hyperparameters, the training package's
optimizers, one jitted and donated step), on a synthetic MNIST-shaped batch.
Optimizers are timed interleaved in the same process; the table gives
steps/s (median over repeats) and the ratio to ``adamw`` (goal:
``bort_adamw`` >= 0.9x).

  python benchmarks/train_speed_cpu.py --models mlp invertible_cnn --repeats 7
"""

from __future__ import annotations

import argparse

import jax
import ml_collections
import numpy as np
import timing

from bort_jax import configs
from bort_jax import training
from bort_jax.training import loop

# model -> the config whose model, batch size and hyperparameters are timed.
MODELS = {'mlp': 'mnist_mlp', 'invertible_cnn': 'mnist_cnn'}


def make_runner(config: ml_collections.ConfigDict, batch):
  """A function running ``n`` train steps of ``config`` and returning seconds per step."""
  tx, _ = training.optimizer_from_config(config, steps_per_epoch=1000)

  def initialize():
    model = training.model_from_config(config)
    return training.create_train_state(model, tx, jax.random.key(0))

  definition = jax.eval_shape(initialize)[0]
  state = loop.initialize_state(lambda: initialize()[1])
  step = jax.jit(training.make_train_step(definition, tx), donate_argnums=0)
  return timing.step_runner(step, state, batch)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument(
      '--models', nargs='+', default=list(MODELS), choices=list(MODELS)
  )
  parser.add_argument(
      '--optimizers', nargs='+', default=['adamw', 'bort_adamw']
  )
  parser.add_argument('--batch-size', type=int, help="default: the config's")
  parser.add_argument('--gamma', type=float, help="default: the config's")
  parser.add_argument('--iterations', type=int, default=20)
  parser.add_argument('--repeats', type=int, default=7)
  args = parser.parse_args(argv)

  baseline = args.optimizers[0]
  print(
      f'# {jax.devices()[0].device_kind}, {jax.device_count()} device(s); jax '
      f"{jax.__version__}; MNIST-shaped batches of the configs' size; {args.iterations} "
      f'steps x {args.repeats} interleaved repeats, median; ratio to {baseline}'
  )
  print(
      '| model (config) | batch | optimizer | steps / s | ms / step | vs '
      + baseline
      + ' |'
  )
  print('|---|---|---|---|---|---|', flush=True)
  for model_name in args.models:
    config = configs.get_config(MODELS[model_name])
    if args.batch_size:
      config = configs.replace(config, batch_size=args.batch_size)
    rng = np.random.default_rng(0)
    batch = jax.device_put(
        {
            'image': rng.standard_normal((config.batch_size, 28, 28, 1)).astype(
                np.float32
            ),
            'label': rng.integers(0, 10, config.batch_size).astype(np.int32),
        }
    )
    runners = {
        name: make_runner(
            configs.replace(
                config,
                optimizer=name,
                gamma=args.gamma if args.gamma is not None else config.gamma,
            ),
            batch,
        )
        for name in args.optimizers
    }
    medians = timing.interleaved_medians(
        runners, args.iterations, args.repeats, warmup=3
    )
    base = medians[baseline]
    for name, median in medians.items():
      print(
          f'| {model_name} ({config.name}) | {config.batch_size} | {name} | {1 / median:.1f} | '
          f'{1e3 * median:.2f} | {base / median:.3f}x |',
          flush=True,
      )


if __name__ == '__main__':
  main()
