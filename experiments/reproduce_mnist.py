"""Does Bort cost accuracy, and what does gamma do? MNIST, real data, CPU.

Five parts, each a set of ``bort-train`` runs (``train_and_evaluate``) in
``WORKDIR/runs/<run>`` (a run the parts share is trained once):

* ``table``: the MLP and the invertible CNN, each with ``sgd``, ``bort_sgd``,
  ``adamw`` and ``bort_adamw``, over ``--seeds``: test accuracy mean ± std and
  the final orthogonality figures;
* ``sweep``: the CNN with ``bort_adamw`` over ``--gammas`` (0 included):
  accuracy, orthogonality and the MSE of reconstructing the input from the top
  convolutional layer with the transposed weights;
* ``modes``: the CNN with ``bort_adamw`` in the modes ``l2-full``,
  ``l1-fullrow`` and ``l2-row``, same figures.
* ``head``: the Bort runs of ``table`` again with the classifier's kernel
  left out of the Bort term (``bort_exclude``): does constraining the head
  cost the accuracy?
* ``longer``: the CNN's ``adamw`` and ``bort_adamw`` runs of ``table`` with
  ``--epochs-cnn-long`` epochs: does the gap change with the budget?

It writes ``results.json``, ``results.md`` (the tables) and
``gamma_sweep.png`` to ``WORKDIR``. Finished runs are read back from their
``metrics.jsonl``, so an interrupted reproduction continues where it stopped.

  python -m experiments.reproduce_mnist --data-dir /tmp/tfds --workdir runs/reproduce
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import ml_collections

import bort_jax
from bort_jax import configs
from bort_jax import explain
from bort_jax import models
from bort_jax.data import make_eval_iterator
from bort_jax.training import checkpoint
from bort_jax.training import loop

TOP_CONV_LAYER = 'down2_lrelu'
PARTS = ('table', 'sweep', 'modes', 'head', 'longer')
# One recipe per optimizer family, the same for both models, so that each Bort
# run differs from its baseline in gamma only. SGD family: the mnist_mlp config
# (gamma 0.05, the authors' MNIST value for BortS); AdamW family: the mnist_cnn
# config (gamma 2, see its docstring).
_SGD = dict(learning_rate=0.05, momentum=0.9, weight_decay=5e-4)
_ADAMW = dict(learning_rate=2e-3, weight_decay=1e-4)
OPTIMIZER_HYPERPARAMETERS = {
    'sgd': dict(optimizer='sgd', gamma=0.0, **_SGD),
    'bort_sgd': dict(optimizer='bort_sgd', gamma=0.05, **_SGD),
    'adamw': dict(optimizer='adamw', gamma=0.0, **_ADAMW),
    'bort_adamw': dict(optimizer='bort_adamw', gamma=2.0, **_ADAMW),
}


@dataclasses.dataclass(frozen=True)
class Run:
  part: str
  config: ml_collections.ConfigDict

  @property
  def name(self) -> str:
    """The run's directory name: every setting the parts vary is in it."""
    c = self.config
    head = '-free_head' if c.bort_exclude else ''
    subset = (
        f'-n{c.train_examples}-{c.eval_examples}'
        if c.train_examples or c.eval_examples
        else ''
    )
    return (
        f'{c.name}-{c.optimizer}-g{c.gamma:g}-{c.bort_mode}{head}'
        f'-e{c.epochs}{subset}-s{c.seed}'
    )


def classifier_pattern(config: ml_collections.ConfigDict) -> str:
  """The ``bort_exclude`` pattern of the model's classifier kernel."""
  model = nnx.eval_shape(
      lambda: models.create_model(
          config.model,
          num_classes=10,
          rngs=nnx.Rngs(0),
          **config.model_kwargs.to_dict(),
      )
  )
  return f'^layers/{model.layer_names.index("classifier")}/kernel$'


def final_record(workdir: Path, epochs: int) -> dict | None:
  """The last per-epoch record of a finished run, or None."""
  record = loop.last_evaluation(workdir)
  return record if record and record['epoch'] >= epochs else None


def reconstruction_mse(
    workdir: Path, data_dir: str, num_examples: int
) -> float:
  """MSE between test images and their reconstruction from the top conv layer."""
  model, _ = checkpoint.restore_model(workdir)
  batch = next(
      make_eval_iterator('mnist', batch_size=num_examples, data_dir=data_dir)
  )
  images = jnp.asarray(batch['image'])
  features = model.forward_to(images, TOP_CONV_LAYER)
  reconstruction = explain.reconstruct(
      model, features, TOP_CONV_LAYER, images.shape[1:]
  )
  return float(jnp.mean(jnp.square(reconstruction - images)))


def constrained_relative_error(workdir: Path, bort_exclude) -> float:
  """Mean relative orthogonality error over the kernels the Bort term acted on."""
  model, _ = checkpoint.restore_model(workdir)
  report = bort_jax.orthogonality_report(
      nnx.state(model, nnx.Param), mask=bort_jax.kernels_except(*bort_exclude)
  )
  return float(bort_jax.summarize_report(report)['relative_error/mean'])


def planned_runs(args) -> list[Run]:
  runs = []
  base = {
      'mlp': configs.get_config('mnist_mlp'),
      'cnn': configs.get_config('mnist_cnn'),
  }
  base = {
      k: configs.replace(
          c,
          train_examples=args.train_examples,
          eval_examples=args.eval_examples,
      )
      for k, c in base.items()
  }
  epochs = {'mlp': args.epochs_mlp, 'cnn': args.epochs_cnn}
  for model in ('mlp', 'cnn'):
    for optimizer in OPTIMIZER_HYPERPARAMETERS:
      for seed in args.seeds:
        config = configs.replace(
            base[model],
            seed=seed,
            epochs=epochs[model],
            **OPTIMIZER_HYPERPARAMETERS[optimizer],
        )
        if 'table' in args.parts:
          runs.append(Run('table', config))
        if 'head' in args.parts and optimizer.startswith('bort'):
          runs.append(
              Run(
                  'head',
                  configs.replace(
                      config, bort_exclude=(classifier_pattern(config),)
                  ),
              )
          )
  cnn_bort = configs.replace(
      base['cnn'],
      epochs=args.epochs_cnn,
      **OPTIMIZER_HYPERPARAMETERS['bort_adamw'],
  )
  if 'sweep' in args.parts:
    runs += [
        Run('sweep', configs.replace(cnn_bort, gamma=g)) for g in args.gammas
    ]
  if 'modes' in args.parts:
    runs += [
        Run('modes', configs.replace(cnn_bort, bort_mode=m)) for m in args.modes
    ]
  if 'longer' in args.parts:
    for optimizer in ('adamw', 'bort_adamw'):
      for seed in args.seeds:
        runs.append(
            Run(
                'longer',
                configs.replace(
                    base['cnn'],
                    seed=seed,
                    epochs=args.epochs_cnn_long,
                    **OPTIMIZER_HYPERPARAMETERS[optimizer],
                ),
            )
        )
  return runs


def execute(run: Run, args) -> dict:
  workdir = Path(args.workdir) / 'runs' / run.name  # parts share identical runs
  record = final_record(workdir, run.config.epochs)
  if record is None:
    loop.train_and_evaluate(
        run.config,
        workdir,
        data_dir=args.data_dir,
        resume=(workdir / 'checkpoints').exists(),
        progress=args.progress,
        description=run.name,
    )
    record = final_record(workdir, run.config.epochs)
  result = dict(
      part=run.part,
      run=run.name,
      model=run.config.model,
      optimizer=run.config.optimizer,
      gamma=run.config.gamma,
      mode=run.config.bort_mode,
      seed=run.config.seed,
      epochs=run.config.epochs,
      bort_exclude=list(run.config.bort_exclude),
      eval_accuracy=record['eval_accuracy'],
      eval_loss=record['eval_loss'],
      orthogonality=record.get('orthogonality', {}),
      # Seconds of the (last) train_and_evaluate call, from metrics.jsonl.
      train_seconds=record.get('elapsed'),
  )
  if run.part in ('sweep', 'modes'):
    result['reconstruction_mse'] = reconstruction_mse(
        workdir, args.data_dir, 256
    )
  if run.config.bort_exclude:
    result['constrained_relative_error'] = constrained_relative_error(
        workdir, run.config.bort_exclude
    )
  print(
      json.dumps({k: v for k, v in result.items() if k != 'orthogonality'}),
      flush=True,
  )
  return result


def mean_std(values) -> str:
  values = list(values)
  std = statistics.stdev(values) if len(values) > 1 else 0.0
  return f'{100 * statistics.mean(values):.2f} ± {100 * std:.2f}'


def markdown(results: list[dict], args) -> str:
  subset = ''
  if args.train_examples or args.eval_examples:
    subset = (
        f'Subset: the first {args.train_examples or "all"} training and '
        f'{args.eval_examples or "all"} test examples. '
    )
  lines = [
      '# MNIST reproduction',
      '',
      f'MLP {args.epochs_mlp} epochs, CNN {args.epochs_cnn} epochs, seeds {args.seeds}. '
      f'{subset}Test accuracy (%) mean ± std over seeds; orthogonality: relative '
      '‖G − aI‖_F/‖aI‖_F averaged over kernels (final epoch).',
      '',
  ]
  table = [r for r in results if r['part'] == 'table']
  if table:
    lines += [
        '| model | optimizer | gamma | test accuracy | rel. orthogonality error | '
        'mean abs cosine |',
        '|---|---|---|---|---|---|',
    ]
    for model in ('mlp', 'invertible_cnn'):
      for optimizer in OPTIMIZER_HYPERPARAMETERS:
        rows = [
            r
            for r in table
            if r['model'] == model and r['optimizer'] == optimizer
        ]
        if not rows:
          continue
        ortho = [
            r['orthogonality'].get('relative_error/mean', float('nan'))
            for r in rows
        ]
        cosine = [
            r['orthogonality'].get('mean_abs_cosine/mean', float('nan'))
            for r in rows
        ]
        lines.append(
            f"| {model} | {optimizer} | {rows[0]['gamma']:g} | "
            f"{mean_std(r['eval_accuracy'] for r in rows)} | "
            f'{statistics.mean(ortho):.3g} | {statistics.mean(cosine):.3f} |'
        )
    lines.append('')
  head = [r for r in results if r['part'] == 'head']
  if head:
    lines += [
        '## The classifier left out of the Bort term',
        '',
        'Test accuracy (%) mean ± std over seeds, with the classifier kernel constrained '
        '(the table above) and left free; the orthogonality error of the free-classifier '
        'runs is averaged over the kernels Bort acted on, and over all kernels.',
        '',
        '| model | optimizer | gamma | classifier constrained | classifier free | '
        'rel. orthogonality error, constrained kernels | all kernels |',
        '|---|---|---|---|---|---|---|',
    ]
    for model in ('mlp', 'invertible_cnn'):
      for optimizer in OPTIMIZER_HYPERPARAMETERS:
        free = [
            r
            for r in head
            if r['model'] == model and r['optimizer'] == optimizer
        ]
        if not free:
          continue
        constrained = [
            r
            for r in table
            if r['model'] == model and r['optimizer'] == optimizer
        ]
        constrained_text = (
            mean_std(r['eval_accuracy'] for r in constrained)
            if constrained
            else 'n/a'
        )
        ortho = statistics.mean(
            r['orthogonality'].get('relative_error/mean', float('nan'))
            for r in free
        )
        ortho_constrained = statistics.mean(
            r['constrained_relative_error'] for r in free
        )
        lines.append(
            f"| {model} | {optimizer} | {free[0]['gamma']:g} | {constrained_text} | "
            f"{mean_std(r['eval_accuracy'] for r in free)} | "
            f'{ortho_constrained:.3g} | {ortho:.3g} |'
        )
    lines.append('')
  longer = [r for r in results if r['part'] == 'longer']
  if longer:
    lines += [
        '## CNN, a longer budget',
        '',
        f'The CNN rows of the table, trained for {args.epochs_cnn_long} epochs instead of '
        f'{args.epochs_cnn}; mean ± std over seeds.',
        '',
        '| optimizer | gamma | epochs | test accuracy | rel. orthogonality error |',
        '|---|---|---|---|---|',
    ]
    for optimizer in ('adamw', 'bort_adamw'):
      for rows in (
          [
              r
              for r in table
              if r['model'] == 'invertible_cnn' and r['optimizer'] == optimizer
          ],
          [r for r in longer if r['optimizer'] == optimizer],
      ):
        if rows:
          ortho = statistics.mean(
              r['orthogonality'].get('relative_error/mean', float('nan'))
              for r in rows
          )
          lines.append(
              f"| {optimizer} | {rows[0]['gamma']:g} | {rows[0]['epochs']} | "
              f"{mean_std(r['eval_accuracy'] for r in rows)} | {ortho:.3g} |"
          )
    lines.append('')
  for part, key in (('sweep', 'gamma'), ('modes', 'mode')):
    rows = [r for r in results if r['part'] == part]
    if rows:
      lines += [
          f'## CNN, bort_adamw: {key}',
          '',
          f'| {key} | test accuracy | rel. orthogonality error | mean abs cosine | '
          'reconstruction MSE (top conv) |',
          '|---|---|---|---|---|',
      ]
      for r in rows:
        o = r['orthogonality']
        lines.append(
            f"| {r[key]} | {100 * r['eval_accuracy']:.2f} | "
            f"{o.get('relative_error/mean', float('nan')):.3g} | "
            f"{o.get('mean_abs_cosine/mean', float('nan')):.3f} | "
            f"{r['reconstruction_mse']:.4f} |"
        )
      lines.append('')
  return '\n'.join(lines)


def plot_sweep(results: list[dict], path: Path) -> None:
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  rows = sorted(
      (r for r in results if r['part'] == 'sweep'), key=lambda r: r['gamma']
  )
  if not rows:
    return
  gammas = [r['gamma'] for r in rows]
  x = np.arange(len(gammas))
  panels = [
      ('test accuracy (%)', [100 * r['eval_accuracy'] for r in rows]),
      (
          'rel. orthogonality error',
          [r['orthogonality'].get('relative_error/mean') for r in rows],
      ),
      (
          'reconstruction MSE (top conv)',
          [r['reconstruction_mse'] for r in rows],
      ),
  ]
  fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
  for ax, (title, values) in zip(axes, panels):
    ax.plot(x, values, 'o-')
    ax.set_xticks(x, [f'{g:g}' for g in gammas])
    ax.set_xlabel('gamma')
    ax.set_title(title)
    ax.grid(alpha=0.3)
  fig.suptitle('Invertible CNN on MNIST, bort_adamw: effect of gamma')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument(
      '--data-dir', required=True, help='tfds data dir holding mnist'
  )
  parser.add_argument('--workdir', default='runs/reproduce_mnist')
  parser.add_argument('--parts', nargs='+', default=list(PARTS), choices=PARTS)
  parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
  parser.add_argument('--epochs-mlp', type=int, default=10)
  parser.add_argument('--epochs-cnn', type=int, default=2)
  parser.add_argument(
      '--epochs-cnn-long',
      type=int,
      default=6,
      help='epochs of the CNN in the longer part',
  )
  parser.add_argument(
      '--gammas', nargs='+', type=float, default=[0.0, 0.5, 2.0, 5.0, 20.0]
  )
  parser.add_argument(
      '--modes', nargs='+', default=['l2-full', 'l1-fullrow', 'l2-row']
  )
  parser.add_argument(
      '--train-examples',
      type=int,
      default=0,
      help='train on the first N examples only (0: all; for smoke runs)',
  )
  parser.add_argument(
      '--eval-examples',
      type=int,
      default=0,
      help='evaluate on the first N test examples only (0: all)',
  )
  parser.add_argument('--progress', action='store_true')
  args = parser.parse_args(argv)

  workdir = Path(args.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  results = [execute(run, args) for run in planned_runs(args)]
  (workdir / 'results.json').write_text(
      json.dumps(
          dict(
              device=str(jax.devices()[0].device_kind),
              args=vars(args),
              results=results,
          ),
          indent=1,
      )
  )
  (workdir / 'results.md').write_text(markdown(results, args))
  plot_sweep(results, workdir / 'gamma_sweep.png')
  print(markdown(results, args))


if __name__ == '__main__':
  main()
