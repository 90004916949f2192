r"""The backtracking map on a ResNet and a ViT after a short MNIST run.

``bort_jax.explain.backtrack`` runs a function's primitives backwards, so it
gives a map ``g`` from a representation ``z = f(x)`` back to the input for
models that are not layer chains: residual additions are inverted by a
fixed-point iteration (``method='transpose'``, the inverse only where the
residual branch is a contraction) or by Gauss-Newton (``'pinv'``), and
attention and LayerNorm inside a residual branch are only evaluated forward.
This experiment measures what that map gives, with and without Bort:

* a ResNet-18 (BasicBlock, stages (2, 2, 2, 2), CIFAR stem, width 8) and a
  small ViT (28x28 inputs, 7x7 patches, width 64, 2 blocks), trained for
  one epoch on the first ``--train-examples`` MNIST training images with
  ``adamw`` and with ``bort_adamw``, every other setting equal: the
  ``mnist_invertible_cnn`` recipe (AdamW learning rate 2e-3 with a cosine
  schedule, weight decay 1e-4, batch 64, Bort gamma 30, amplitude 1), the
  classifier kernel left out of the Bort term as in that recipe;
* test accuracy on the first ``--test-examples`` test images, and the
  orthogonality of the kernels (:func:`bort_jax.orthogonality_report`);
* in eval mode (BatchNorm's running statistics), ``g`` of the ResNet from
  the output of stage 1 and of stage 2, and of the ViT from the patch
  embedding and from the output of the first encoder block, with both
  methods, on the first ``--explain-images`` test images (``--pinv-images``
  for ``'pinv'``, whose conjugate-gradient and Gauss-Newton solves are
  slow): per image the Pearson r and the affine-fitted MSE of ``g(z)``
  against the image, the affine-fitted MSE of a blank image (the image's
  variance: what knowing nothing scores), and the preimage residual
  :math:`\lVert f(g(z)) - z\rVert / \lVert z\rVert`, 0 exactly when
  ``g(z)`` is a preimage of ``z``, i.e. when ``g`` inverts ``f`` there.

Means over the images of each seed, then mean and 95% t-interval over the
seeds. Writes ``report.json`` and ``report.md`` to ``--out``. A run whose
loss, parameters or measurements are not finite stops with an error.

  python -m experiments.backtrack_architectures --idx-dir ../shared/data/mnist \
      --out experiments/results/backtrack_architectures
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import bort_jax
from bort_jax import configs
from bort_jax import data
from bort_jax import explain
from bort_jax import models
from bort_jax import training
from bort_jax.data import mnist_idx
from bort_jax.programs.explain import protocol
from bort_jax.training import numerics

OPTIMIZERS = ('adamw', 'bort_adamw')
METHODS = ('transpose', 'pinv')
METRICS = ('pearson_r', 'affine_mse', 'blank_affine_mse', 'preimage_residual')
MNIST = data.dataset_info('mnist')
IDX_DIR_ENV = 'BORT_MNIST_IDX_DIR'
#: Below this preimage residual, the report calls ``g`` an inverse.
INVERSE_RESIDUAL = 1e-3

Layer = Callable[[nnx.Module, jax.Array], jax.Array]


class Architecture(NamedTuple):
  """A model to train and the representations to backtrack from.

  Attributes:
    description: what the model is, for the report.
    build: ``rngs -> model``.
    layers: ``{name: layer(model, images) -> representation}``.
    classifier: regular expression of the classifier kernel's path, left
      out of the Bort term.
    input_kernel: path of the kernel that reads the image.
  """

  description: str
  build: Callable[[nnx.Rngs], nnx.Module]
  layers: Mapping[str, Layer]
  classifier: str
  input_kernel: str


def resnet_stages(model: models.ResNet, images: jax.Array, stages: int):
  """The output of the first ``stages`` stages (stem included)."""
  x = jax.nn.relu(model.stem_bn(model.stem_conv(images)))
  for stage in model.stages[:stages]:
    for block in stage:
      x = block(x)
  return x


def vit_patches(model: models.VisionTransformer, images: jax.Array):
  """The patch embedding, ``(N, patches, D)``."""
  return model.patch_embed(images)


def vit_blocks(model: models.VisionTransformer, images: jax.Array, blocks: int):
  """The tokens after the first ``blocks`` encoder blocks (class token first).

  The first steps of ``VisionTransformer.features``: patch embedding, class
  token, position embedding (dropout is off in eval mode).
  """
  x = vit_patches(model, images)
  cls_token = jnp.broadcast_to(
      model.cls_token[...].astype(x.dtype), (x.shape[0], 1, x.shape[-1])
  )
  x = jnp.concatenate([cls_token, x], axis=1)
  x = model.pos_dropout(x + model.pos_embed[...].astype(x.dtype))
  for block in model.blocks[:blocks]:
    x = block(x)
  return x


def resnet(
    stage_sizes: Sequence[int] = (2, 2, 2, 2), width: int = 8
) -> Architecture:
  """A ResNet with BasicBlocks and the CIFAR stem, for 28x28x1 inputs."""
  return Architecture(
      description=(
          f'ResNet, BasicBlock, stages {tuple(stage_sizes)}, CIFAR stem '
          f'(3x3 conv 1 -> {width}), width {width}, BatchNorm'
      ),
      build=lambda rngs: models.ResNet(
          models.BasicBlock,
          tuple(stage_sizes),
          num_classes=MNIST.num_classes,
          stem='cifar',
          in_channels=1,
          width=width,
          rngs=rngs,
      ),
      layers={
          'stage1': functools.partial(resnet_stages, stages=1),
          'stage2': functools.partial(resnet_stages, stages=2),
      },
      classifier='^classifier/kernel$',
      input_kernel='stem_conv/kernel',
  )


def vit(
    patch_size: int = 7, embed_dim: int = 64, depth: int = 2, num_heads: int = 2
) -> Architecture:
  """A small ViT for 28x28x1 inputs (pre-norm blocks, class token)."""
  return Architecture(
      description=(
          f'ViT, {patch_size}x{patch_size} patches '
          f'({patch_size**2} pixels -> {embed_dim}), width {embed_dim}, '
          f'{depth} blocks, {num_heads} heads, MLP ratio 4'
      ),
      build=lambda rngs: models.VisionTransformer(
          MNIST.num_classes,
          image_size=MNIST.image_shape[0],
          patch_size=patch_size,
          in_channels=1,
          embed_dim=embed_dim,
          depth=depth,
          num_heads=num_heads,
          rngs=rngs,
      ),
      layers={
          'patch_embedding': vit_patches,
          'block1': functools.partial(vit_blocks, blocks=1),
      },
      classifier='^head/kernel$',
      input_kernel='patch_embed/proj/kernel',
  )


ARCHITECTURES: dict[str, Architecture] = {'resnet': resnet(), 'vit': vit()}


class Settings(NamedTuple):
  """What the runs share (the command-line flags)."""

  seeds: tuple[int, ...] = (0, 1, 2)
  epochs: int = 1
  batch_size: int = 64
  explain_images: int = 64
  pinv_images: int = 16


def recipe(optimizer: str, epochs: int, batch_size: int, classifier: str):
  """The ``mnist_invertible_cnn`` recipe for ``optimizer`` (gamma 0 without
  Bort), with the classifier kernel ``classifier`` left out of the Bort term."""
  base = configs.get_config(protocol.GAMMA_RECIPE)
  return configs.replace(
      base,
      optimizer=optimizer,
      gamma=base.gamma if optimizer.startswith('bort_') else 0.0,
      epochs=epochs,
      batch_size=batch_size,
      bort_exclude=(classifier,),
  )


def _check_finite(values: Mapping[str, Any], where: str) -> None:
  bad = [k for k, v in values.items() if not np.all(np.isfinite(v))]
  if bad:
    raise FloatingPointError(f'{where}: not finite: {", ".join(bad)}')


def train(
    architecture: Architecture,
    optimizer: str,
    seed: int,
    train_set: mnist_idx.MnistArrays,
    settings: Settings,
    compiled: dict[Any, Callable] | None = None,
) -> tuple[nnx.Module, dict[str, Any]]:
  """Trains one model; returns it in eval mode and its training record.

  ``compiled`` caches the jitted step per (architecture, optimizer), so the
  seeds share one compilation.

  Raises:
    FloatingPointError: a non-finite loss or parameter.
  """
  config = recipe(
      optimizer, settings.epochs, settings.batch_size, architecture.classifier
  )
  images, labels = train_set
  steps = data.steps_per_epoch(len(images), config.batch_size, train=True)
  if steps < 1:
    raise ValueError(
        f'{len(images)} training images make no batch of {config.batch_size}'
    )
  tx, _ = training.optimizer_from_config(config, steps)
  model = architecture.build(nnx.Rngs(seed))
  definition, state = training.create_train_state(
      model, tx, jax.random.key(seed)
  )
  key = (architecture.description, optimizer)
  compiled = {} if compiled is None else compiled
  if key not in compiled:
    compiled[key] = jax.jit(
        training.make_train_step(definition, tx), donate_argnums=0
    )
  step = compiled[key]
  losses = []
  for epoch in range(config.epochs):
    order = data.epoch_permutation(len(images), seed, epoch)
    for i in range(steps):
      index = order[i * config.batch_size : (i + 1) * config.batch_size]
      state, metrics = step(
          state, {'image': images[index], 'label': labels[index]}
      )
      losses.append(metrics['loss'])
  losses = np.asarray(jax.device_get(losses))
  where = f'{architecture.description}, {optimizer}, seed {seed}'
  if not np.all(np.isfinite(losses)):
    first = int(np.argmin(np.isfinite(losses)))
    raise FloatingPointError(
        f'{where}: the training loss is not finite from step {first}'
    )
  bad = numerics.nonfinite_leaves((state.params, state.model_state))
  if bad:
    raise FloatingPointError(f'{where}: non-finite parameters {bad[:5]}')
  model = nnx.merge(definition.eval, state.params, state.model_state)
  return model, {
      'gamma': float(config.gamma),
      'steps': int(steps * config.epochs),
      'final_train_loss': float(losses[-50:].mean()),
  }


@jax.jit
def _predictions(model: nnx.Module, images: jax.Array) -> jax.Array:
  return jnp.argmax(model(images), axis=-1)


def accuracy(
    model: nnx.Module, test_set: mnist_idx.MnistArrays, batch: int = 500
) -> float:
  """Top-1 accuracy of ``model`` (in eval mode) on ``test_set``."""
  images, labels = test_set
  correct = sum(
      int(
          jnp.sum(
              _predictions(model, images[i : i + batch])
              == labels[i : i + batch]
          )
      )
      for i in range(0, len(images), batch)
  )
  return correct / len(images)


def orthogonality(
    model: nnx.Module, architecture: Architecture
) -> dict[str, float]:
  """Relative error of ``W Wᵀ = I`` over the kernels of the Bort term."""
  report = bort_jax.orthogonality_report(
      nnx.state(model, nnx.Param),
      mask=bort_jax.kernels_except(architecture.classifier),
  )
  summary = bort_jax.summarize_report(report)
  return {
      'relative_error_mean': float(summary['relative_error/mean']),
      'relative_error_max': float(summary['relative_error/max']),
      'input_kernel_relative_error': float(
          report[architecture.input_kernel]['relative_error']
      ),
  }


@functools.partial(jax.jit, static_argnames=('layer', 'method'))
def backtrack_measures(
    model: nnx.Module, images: jax.Array, layer: Layer, method: str
) -> dict[str, jax.Array]:
  """Per-image measures of ``g`` (:data:`METRICS`) from ``layer``."""
  f = functools.partial(layer, model)
  z = f(images)
  x_hat = explain.reconstruct(model, z, f, images.shape[1:], method=method)
  miss = jnp.reshape(f(x_hat) - z, (len(z), -1))
  scale = jnp.reshape(z, (len(z), -1))
  return {
      'pearson_r': explain.pearson_r(x_hat, images),
      'affine_mse': explain.affine_fitted_mse(x_hat, images),
      'blank_affine_mse': explain.affine_fitted_mse(
          jnp.zeros_like(images), images
      ),
      'preimage_residual': jnp.linalg.norm(miss, axis=-1)
      / jnp.linalg.norm(scale, axis=-1),
  }


def _interval(values: Sequence[float]) -> dict[str, Any]:
  mean, half = explain.mean_confidence_interval(values)
  half = float(half)
  return {
      'mean': float(mean),
      'ci95': half if math.isfinite(half) else None,
      'per_seed': [float(v) for v in values],
  }


def run(
    train_set: mnist_idx.MnistArrays,
    test_set: mnist_idx.MnistArrays,
    settings: Settings,
    architectures: Mapping[str, Architecture] = ARCHITECTURES,
    optimizers: Sequence[str] = OPTIMIZERS,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
  """Trains, measures and aggregates; returns the report (a JSON tree)."""
  explain_set = test_set.images[: settings.explain_images]
  compiled = {}
  runs, rows = [], []
  for arch_name, architecture in architectures.items():
    for optimizer in optimizers:
      per_seed = []
      for seed in settings.seeds:
        start = time.perf_counter()
        model, record = train(
            architecture, optimizer, seed, train_set, settings, compiled
        )
        record.update(
            architecture=arch_name,
            optimizer=optimizer,
            seed=seed,
            train_seconds=round(time.perf_counter() - start, 1),
            test_accuracy=accuracy(model, test_set),
            orthogonality=orthogonality(model, architecture),
        )
        where = f'{arch_name}, {optimizer}, seed {seed}'
        _check_finite(record['orthogonality'], where)
        measures = {}
        for layer_name, layer in architecture.layers.items():
          for method in METHODS:
            count = (
                settings.pinv_images if method == 'pinv' else len(explain_set)
            )
            values = jax.device_get(
                backtrack_measures(model, explain_set[:count], layer, method)
            )
            _check_finite(values, f'{where}, {layer_name}, {method}')
            measures[(layer_name, method)] = {
                k: float(np.mean(v)) for k, v in values.items()
            }
            measures[(layer_name, method)]['images'] = count
        record['backtracking'] = [
            {'layer': layer, 'method': method, **values}
            for (layer, method), values in measures.items()
        ]
        runs.append(record)
        per_seed.append((record, measures))
        log(
            f'{where}: accuracy {record["test_accuracy"]:.4f}, '
            + ', '.join(
                f'{layer}/{method} r {m["pearson_r"]:.3f} '
                f'residual {m["preimage_residual"]:.3g}'
                for (layer, method), m in measures.items()
            )
        )
      summary = {
          'architecture': arch_name,
          'optimizer': optimizer,
          'test_accuracy': _interval([r['test_accuracy'] for r, _ in per_seed]),
          'orthogonality': {
              k: _interval([r['orthogonality'][k] for r, _ in per_seed])
              for k in per_seed[0][0]['orthogonality']
          },
          'backtracking': [
              {
                  'layer': layer,
                  'method': method,
                  'images': per_seed[0][1][(layer, method)]['images'],
                  **{
                      k: _interval([m[(layer, method)][k] for _, m in per_seed])
                      for k in METRICS
                  },
              }
              for layer, method in per_seed[0][1]
          ],
      }
      rows.append(summary)
  return {
      'settings': {
          **settings._asdict(),
          'seeds': list(settings.seeds),
          'train_examples': len(train_set.images),
          'test_examples': len(test_set.images),
          'recipe': protocol.GAMMA_RECIPE,
          'gamma': float(configs.get_config(protocol.GAMMA_RECIPE).gamma),
          'architectures': {k: a.description for k, a in architectures.items()},
      },
      'summary': rows,
      'runs': runs,
  }


def _cell(interval: Mapping[str, Any], digits: int = 3) -> str:
  text = f'{interval["mean"]:.{digits}g}'
  if interval['ci95'] is not None:
    text += f' ± {interval["ci95"]:.2g}'
  return text


def _verdict(row: Mapping[str, Any]) -> str:
  residual = row['preimage_residual']['mean']
  if residual < INVERSE_RESIDUAL:
    return 'inverse (g(z) is a preimage)'
  return f'not an inverse: f(g(z)) misses z by {residual:.0%}'


def markdown(report: Mapping[str, Any]) -> str:
  """The tables of ``report``, with one line per row on what held."""
  s = report['settings']
  lines = [
      '# The backtracking map on a ResNet and a ViT (MNIST)',
      '',
      f'One epoch on the first {s["train_examples"]} MNIST training images '
      f'(batch {s["batch_size"]}), seeds {s["seeds"]}; `adamw` against '
      f'`bort_adamw` (gamma {s["gamma"]:g}, the `{s["recipe"]}` recipe; the '
      'classifier kernel is left out of the Bort term). Accuracy on the '
      f'first {s["test_examples"]} test images. The backtracking map `g` of '
      'the eval-mode model (BatchNorm running statistics) on the first '
      f'{s["explain_images"]} test images under `transpose` and '
      f'{s["pinv_images"]} under `pinv` (its least-squares solves are '
      'slow). Mean ± 95% t-interval over the seeds of the per-seed means '
      'over images.',
      '',
      '* r: Pearson correlation of g(z) with the image (1: exact up to gain '
      'and offset).',
      '* affine MSE: MSE after the best gain and offset; the blank image '
      '(all zeros) scores the image variance, the reference of a map that '
      'gives nothing back.',
      '* residual: ‖f(g(z)) − z‖ / ‖z‖, 0 exactly when g(z) is a preimage '
      'of z, i.e. when g inverts f there.',
      '',
  ]
  for name, description in s['architectures'].items():
    lines += [f'## {name}: {description}', '']
    lines += [
        '| optimizer | test accuracy | orthogonality error, mean (max) '
        '| input kernel error |',
        '|---|---|---|---|',
    ]
    rows = [r for r in report['summary'] if r['architecture'] == name]
    for r in rows:
      o = r['orthogonality']
      lines.append(
          f'| {r["optimizer"]} | {_cell(r["test_accuracy"])} '
          f'| {_cell(o["relative_error_mean"])} '
          f'({_cell(o["relative_error_max"])}) '
          f'| {_cell(o["input_kernel_relative_error"])} |'
      )
    lines += [
        '',
        '| layer | method | optimizer | images | r | affine MSE '
        '| blank affine MSE | residual | |',
        '|---|---|---|---|---|---|---|---|---|',
    ]
    table = [
        (b['layer'], b['method'], r['optimizer'], b)
        for r in rows
        for b in r['backtracking']
    ]
    order = {k: i for i, k in enumerate(dict.fromkeys(t[0] for t in table))}
    table.sort(key=lambda t: (order[t[0]], METHODS.index(t[1])))
    for layer, method, optimizer, b in table:
      lines.append(
          f'| {layer} | {method} | {optimizer} | {b["images"]} '
          f'| {_cell(b["pearson_r"])} | {_cell(b["affine_mse"])} '
          f'| {_cell(b["blank_affine_mse"])} '
          f'| {_cell(b["preimage_residual"])} | {_verdict(b)} |'
      )
    lines.append('')
  return '\n'.join(lines + _findings(report))


def _overlap(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
  if a['ci95'] is None or b['ci95'] is None:
    return 'one seed, no interval'
  disjoint = abs(a['mean'] - b['mean']) > a['ci95'] + b['ci95']
  return 'intervals disjoint' if disjoint else 'intervals overlap'


def _findings(report: Mapping[str, Any]) -> list[str]:
  """What held and what did not, read off the summary."""
  rows = [
      (r['architecture'], r['optimizer'], b)
      for r in report['summary']
      for b in r['backtracking']
  ]
  inverse = [
      f'{arch} {b["layer"]} {b["method"]} ({optimizer})'
      for arch, optimizer, b in rows
      if b['preimage_residual']['mean'] < INVERSE_RESIDUAL
  ]
  lines = [
      '## What held and what did not',
      '',
      f'* g is an inverse (mean residual below {INVERSE_RESIDUAL:g}) for: '
      + (', '.join(inverse) if inverse else 'no row')
      + '; everywhere else g(z) is no preimage of z, and r measures an '
      'approximation.',
  ]
  by_key = {(a, b['layer'], b['method'], o): b for a, o, b in rows}
  for arch, layer, method, optimizer in by_key:
    if (
        optimizer != OPTIMIZERS[0]
        or (arch, layer, method, OPTIMIZERS[1]) not in by_key
    ):
      continue
    base = by_key[(arch, layer, method, OPTIMIZERS[0])]['pearson_r']
    bort = by_key[(arch, layer, method, OPTIMIZERS[1])]['pearson_r']
    lines.append(
        f'* {arch} {layer}, {method}: r {base["mean"]:.3f} with '
        f'{OPTIMIZERS[0]}, {bort["mean"]:.3f} with {OPTIMIZERS[1]} '
        f'({_overlap(base, bort)}).'
    )
  return lines + ['']


def write_report(report: Mapping[str, Any], out: Path) -> None:
  out.mkdir(parents=True, exist_ok=True)
  (out / 'report.json').write_text(json.dumps(report, indent=1) + '\n')
  (out / 'report.md').write_text(markdown(report))


def load_mnist(idx_dir: str, train_examples: int, test_examples: int):
  """The first examples of each split, normalised, ``[N, 28, 28, 1]``."""
  splits = []
  for split, count in (('train', train_examples), ('test', test_examples)):
    images, labels = mnist_idx.load_mnist_split(idx_dir, split)
    images = data.transforms.normalize(
        images[:count, :, :, None], MNIST.mean, MNIST.std
    )
    splits.append(mnist_idx.MnistArrays(images, labels[:count]))
  return splits


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument(
      '--idx-dir',
      default=os.environ.get(IDX_DIR_ENV),
      help=f'folder of the four MNIST IDX .gz files (default: ${IDX_DIR_ENV})',
  )
  parser.add_argument('--out', required=True, type=Path)
  parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
  parser.add_argument('--train-examples', type=int, default=15000)
  parser.add_argument('--test-examples', type=int, default=2000)
  parser.add_argument('--explain-images', type=int, default=64)
  parser.add_argument('--pinv-images', type=int, default=16)
  parser.add_argument(
      '--architectures',
      nargs='+',
      choices=list(ARCHITECTURES),
      default=list(ARCHITECTURES),
  )
  args = parser.parse_args(argv)
  if not args.idx_dir:
    parser.error(f'give --idx-dir or set ${IDX_DIR_ENV}')
  if min(args.explain_images, args.pinv_images) < 1:
    parser.error('--explain-images and --pinv-images must be positive')
  if args.pinv_images > args.explain_images:
    parser.error('--pinv-images must be at most --explain-images')
  return args


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  start = time.perf_counter()
  train_set, test_set = load_mnist(
      args.idx_dir, args.train_examples, args.test_examples
  )
  settings = Settings(
      seeds=tuple(args.seeds),
      explain_images=min(args.explain_images, args.test_examples),
      pinv_images=min(args.pinv_images, args.test_examples),
  )
  report = run(
      train_set,
      test_set,
      settings,
      {k: ARCHITECTURES[k] for k in args.architectures},
  )
  report['wall_seconds'] = round(time.perf_counter() - start)
  write_report(report, args.out)
  print(f'wrote {args.out} in {report["wall_seconds"]} s')
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
