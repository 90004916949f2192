"""Input-pipeline throughput: the old thread loader vs Grain, side by side.

Images per second of the training batches (shuffled, augmented, normalised:
what ``bort-train`` consumes) from

* ``baseline``: the loader that Grain replaced, a generator reading one
  batch after the other in the calling process, its per-image work
  (ImageNet decoding and cropping) spread over a thread pool
  (:func:`baseline_batches`, the iteration of ``bort_jax/data/pipeline.py``
  at commit d28c0fb, built from what the package still has);
* ``grain``: :func:`bort_jax.data.train_dataset` through
  :func:`bort_jax.data.make_iterator` with 0, 1 and 2 worker processes
  (``--workers``), reading threads as the configs set them,

on three data sets:

* ``mnist``: the real MNIST training split, decoded into memory as the MNIST
  configs read it (``in_memory``), batch 128;
* ``mnist-disk``: the same split read from its ``array_record`` files (PNG
  records parsed and decoded per batch);
* ``jpeg``: ImageNet-shaped JPEGs (random sizes 300-500 px a side, smooth
  random content, quality 90), served as ``imagenet2012`` by
  ``tfds.testing.mock_data`` and opened with :func:`bort_jax.data.open_split`;
  decoding and the random-resized crop to 224 are the work. tfds' own mock
  images are 5-50 px arrays, not JPEGs, so the examples are made here and
  given to ``mock_data`` as its data source.

Each repeat opens a fresh iterator of every loader in turn (interleaved),
reads ``--warmup`` batches (worker start-up included), then times
``--steps`` batches; the table gives the median over repeats, the range and
the ratio to the baseline. The first batch of every loader is checked to be
identical to the baseline's. The loader is timed alone (``next`` in a
loop): in training, workers also overlap with the train step.

  python benchmarks/input_pipeline.py \\
    --output benchmarks/results/input_pipeline.md

The MNIST tfds data set is built (once, ~10 s) in ``--data-dir`` from the
four IDX files in ``--mnist-idx-dir`` (default ``$BORT_MNIST_IDX_DIR``, else
``../shared/data/mnist`` next to the repository).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import io
import itertools
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from bort_jax import configs
from bort_jax import data
from bort_jax.data import mnist_idx
from bort_jax.data import pipeline
from bort_jax.data import transforms

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS = ('mnist', 'mnist-disk', 'jpeg')
# Per data set: batch size, timed batches, warm-up batches, reading threads
# (the configs' ``data_threads``: 0 for MNIST, the ImageNet recipes' 2).
MNIST_CONFIG = configs.get_config('mnist_mlp')
IMAGENET_CONFIG = configs.get_config('imagenet_resnet50')
DEFAULTS = {
    'mnist': dict(
        batch_size=MNIST_CONFIG.batch_size,
        steps=1000,
        warmup=50,
        threads=MNIST_CONFIG.data_threads,
    ),
    'mnist-disk': dict(
        batch_size=MNIST_CONFIG.batch_size,
        steps=200,
        warmup=20,
        threads=MNIST_CONFIG.data_threads,
    ),
    'jpeg': dict(
        batch_size=64,
        steps=12,
        warmup=3,
        threads=IMAGENET_CONFIG.data_threads,
    ),
}
JPEG_SIDES = (300, 500)  # ImageNet's photos are ~400 x 350 on average.
JPEG_QUALITY = 90
SEED = 0


# --- BASELINE: the thread loader Grain replaced -----------------------------


@contextlib.contextmanager
def _map_fn(num_threads: int):
  """``map``, or a thread pool's ``map`` for the per-image transforms."""
  if num_threads <= 0:
    yield map
    return
  with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
    yield pool.map


def baseline_batches(
    source: data.Source, *, batch_size: int, seed: int, num_threads: int
) -> Iterator[data.Batch]:
  """BASELINE: the training batches of the loader Grain replaced.

  The iteration of ``make_train_iterator`` in ``bort_jax/data/pipeline.py``
  at commit d28c0fb (one process; epochs chained, each one a generator over
  its steps as the old training loop opened them): the batch read with one
  ``source.read``, its per-image transform mapped over a thread pool of
  ``num_threads`` threads (inline for 0), in the calling process, no batch
  read ahead. Yields the same batches as :func:`bort_jax.data.train_dataset`.
  """
  spec = source.spec
  steps = data.steps_per_epoch(len(source), batch_size, train=True)
  with _map_fn(num_threads) as map_fn:
    for epoch in itertools.count():
      order = data.epoch_permutation(len(source), seed, epoch)
      for step in range(steps):
        indices = order[step * batch_size : (step + 1) * batch_size]
        rng = np.random.default_rng(
            [seed, epoch, pipeline._AUGMENT, step]  # pylint: disable=protected-access
        )
        u = rng.random((batch_size, spec.num_uniforms))
        examples = source.read(indices)
        images = spec.train_transform(examples.images, u, map_fn)
        yield {
            'image': transforms.normalize(images, spec.mean, spec.std),
            'label': examples.labels.astype(np.int32),
            'mask': np.ones(batch_size, bool),
        }


# --- Data --------------------------------------------------------------------


def mnist_source(args, in_memory: bool) -> data.Source:
  """The real MNIST training split, prepared in ``args.data_dir`` if needed."""
  mnist_idx.prepare_mnist(
      mnist_idx.find_idx_files(args.mnist_idx_dir), args.data_dir
  )
  return data.open_split(
      'mnist', 'train', data_dir=args.data_dir, in_memory=in_memory
  )


def jpeg_examples(count: int, seed: int = SEED) -> list[dict]:
  """``count`` ImageNet-shaped examples: JPEG bytes and a label."""
  rng = np.random.default_rng(seed)
  examples = []
  for _ in range(count):
    height, width = rng.integers(JPEG_SIDES[0], JPEG_SIDES[1] + 1, size=2)
    # Smooth colour fields plus mild noise: compresses like a photo, unlike
    # uniform noise.
    coarse = Image.fromarray(
        rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), 'RGB'
    ).resize((int(width), int(height)), Image.Resampling.BICUBIC)
    pixels = np.asarray(coarse, np.int16) + rng.integers(
        -12, 13, (int(height), int(width), 3), dtype=np.int16
    )
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), 'RGB').save(
        buffer, format='JPEG', quality=JPEG_QUALITY
    )
    examples.append(
        {'image': buffer.getvalue(), 'label': int(rng.integers(1000))}
    )
  return examples


def jpeg_source(count: int) -> data.Source:
  """``imagenet2012`` opened through ``tfds.testing.mock_data``, serving
  :func:`jpeg_examples` (a list: pickles into Grain's workers as is)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  examples = jpeg_examples(count)
  with tfds.testing.mock_data(
      num_examples=count, as_data_source_fn=lambda *_, **__: examples
  ):
    # download=True: mock_data leaves is_prepared() False and makes the
    # "download" a no-op (imagenet2012 has no download host to probe).
    return data.open_split(
        'imagenet2012', 'train', data_dir='/nonexistent/tfds', download=True
    )


# --- Timing ------------------------------------------------------------------


def loaders(source, *, batch_size, threads, workers, grain_threads, epochs):
  """name -> (workers, threads, function opening a fresh iterator).

  The baseline reads with ``threads``; Grain with every count of ``workers``
  and of ``grain_threads`` (its reading threads, which also read ahead).
  """
  dataset = data.train_dataset(
      source,
      batch_size=batch_size,
      seed=SEED,
      num_epochs=epochs,
      process_index=0,
      process_count=1,
  )
  result = {
      'baseline (old thread loader)': (
          0,
          threads,
          lambda: baseline_batches(
              source, batch_size=batch_size, seed=SEED, num_threads=threads
          ),
      )
  }
  for count, reading in itertools.product(workers, grain_threads):
    name = (
        f'grain, {count} worker{"" if count == 1 else "s"}, {reading} '
        f'thread{"" if reading == 1 else "s"}'
    )
    result[name] = (
        count,
        reading,
        lambda count=count, reading=reading: data.make_iterator(
            dataset, num_workers=count, num_threads=reading
        ),
    )
  return result


def measure(
    open_iterator,
    *,
    warmup: int,
    steps: int,
    batch_size: int,
    step_seconds: float = 0.0,
):
  """(images per second over ``steps`` batches after ``warmup``, first batch).

  After each timed batch the reader waits ``step_seconds`` with the GIL
  released (``time.sleep``), as the host does while a device runs the
  train step: a loader that reads ahead in threads or processes fills
  that time.
  """
  iterator = open_iterator()
  try:
    first = next(iterator)
    for _ in range(warmup - 1):
      next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
      next(iterator)
      if step_seconds:
        time.sleep(step_seconds)
    seconds = time.perf_counter() - start
  finally:
    close = getattr(iterator, 'close', None)
    if close is not None:
      close()
  return steps * batch_size / seconds, first


def same_batch(a: data.Batch, b: data.Batch) -> bool:
  return all(np.array_equal(a[key], b[key]) for key in ('image', 'label'))


def machine() -> str:
  """CPU model, cores, load and versions, one line."""
  import grain  # pylint: disable=import-outside-toplevel
  import PIL  # pylint: disable=import-outside-toplevel

  model = platform.processor() or 'unknown CPU'
  with contextlib.suppress(OSError):
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.startswith('model name'):
          model = line.split(':', 1)[1].strip()
          break
  usable = len(os.sched_getaffinity(0))
  load = ' '.join(f'{x:.2f}' for x in os.getloadavg())
  return (
      f'{model}, {usable} usable cores ({os.cpu_count()} online), load '
      f'average {load}; Python {platform.python_version()}, grain '
      f'{getattr(grain, "__version__", "?")}, numpy {np.__version__}, '
      f'pillow {PIL.__version__}'
  )


def commit() -> str:
  """The repository's HEAD, short (``-dirty``: tracked files changed)."""
  try:
    return subprocess.run(
        ['git', 'describe', '--always', '--dirty'],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument(
      '--datasets', nargs='+', default=list(DATASETS), choices=DATASETS
  )
  parser.add_argument('--workers', nargs='+', type=int, default=[0, 1, 2])
  parser.add_argument(
      '--batch-size',
      type=int,
      help='default: per data set (MNIST: 128, jpeg: 64)',
  )
  parser.add_argument(
      '--steps',
      type=int,
      help='timed batches per repeat (default: per data set)',
  )
  parser.add_argument(
      '--warmup', type=int, help='batches read first (default: per data set)'
  )
  parser.add_argument(
      '--threads',
      type=int,
      help="reading/decoding threads of both loaders (default: the configs'"
      ' data_threads, MNIST 0, ImageNet 2)',
  )
  parser.add_argument(
      '--grain-threads',
      nargs='+',
      type=int,
      help="Grain's reading threads (default: the baseline's, and 1 where"
      ' that is 0: a thread reading ahead)',
  )
  parser.add_argument(
      '--step-ms',
      nargs='+',
      type=float,
      default=[0.0, 1.0],
      help='milliseconds the reader waits after each batch, GIL released, as'
      ' during a device step (0: the loader alone)',
  )
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument(
      '--jpeg-examples',
      type=int,
      help='JPEGs made (default: enough for warm-up and steps, one epoch)',
  )
  parser.add_argument(
      '--data-dir',
      default=os.path.join(tempfile.gettempdir(), 'bort_jax_benchmark_tfds'),
      help='tfds data dir where MNIST is (or gets) prepared',
  )
  parser.add_argument(
      '--mnist-idx-dir',
      default=os.environ.get('BORT_MNIST_IDX_DIR')
      or REPO_ROOT / '..' / 'shared' / 'data' / 'mnist',
  )
  parser.add_argument('--output', help='also write the markdown to this file')
  args = parser.parse_args(argv)

  wall = time.perf_counter()
  header = [
      f'# Input pipeline, images / s ({datetime.date.today()})',
      '',
      f'Machine: {machine()}.',
      '',
      f'bort_jax at commit {commit()}.',
      '',
      'Command: `python '
      + ' '.join(
          ['benchmarks/input_pipeline.py']
          + (sys.argv[1:] if argv is None else list(argv))
      )
      + '`',
      '',
      'Training batches (shuffled, augmented, normalised); median of '
      f'{args.repeats} interleaved repeats of a fresh iterator (warm-up '
      'batches, then the timed ones); range = min-max over repeats. '
      '"step (ms)": the reader waits that long after each batch with the GIL '
      'released, as while a device runs the train step (0: the loader '
      'alone).',
      '',
      '| data | batch | steps | step (ms) | loader | workers | threads |'
      ' images / s | range | vs baseline |',
      '|---|---|---|---|---|---|---|---|---|---|',
  ]
  print('\n'.join(header), flush=True)
  rows, notes = [], []
  for name in args.datasets:
    settings = dict(DEFAULTS[name])
    for key in ('batch_size', 'steps', 'warmup', 'threads'):
      if getattr(args, key) is not None:
        settings[key] = getattr(args, key)
    batch_size, steps = settings['batch_size'], settings['steps']
    warmup = max(1, settings['warmup'])
    needed = batch_size * (warmup + steps)
    if name == 'jpeg':
      source = jpeg_source(args.jpeg_examples or needed)
      encoded = [example['image'] for example in source.data_source]
      notes.append(
          f'jpeg: {len(encoded)} JPEGs, {JPEG_SIDES[0]}-{JPEG_SIDES[1]} px a'
          f' side, mean {np.mean([len(e) for e in encoded]) / 1024:.0f} KiB.'
      )
    else:
      source = mnist_source(args, in_memory=name == 'mnist')
    epochs = -(-(warmup + steps) // (len(source) // batch_size))
    threads = settings['threads']
    runners = loaders(
        source,
        batch_size=batch_size,
        threads=threads,
        workers=args.workers,
        grain_threads=args.grain_threads or sorted({threads, max(threads, 1)}),
        epochs=epochs,
    )
    for step_ms in args.step_ms:
      rates = {loader: [] for loader in runners}
      reference = None
      for repeat in range(args.repeats):
        for loader, (_, _, open_iterator) in runners.items():
          rate, first = measure(
              open_iterator,
              warmup=warmup,
              steps=steps,
              batch_size=batch_size,
              step_seconds=step_ms / 1000,
          )
          rates[loader].append(rate)
          if reference is None:
            reference = first
          elif repeat == 0 and not same_batch(first, reference):
            raise AssertionError(f'{name}: {loader} yields another first batch')
      base = statistics.median(rates['baseline (old thread loader)'])
      for loader, (workers, reading, _) in runners.items():
        median = statistics.median(rates[loader])
        row = (
            f'| {name} | {batch_size} | {steps} | {step_ms:g} | {loader} | '
            f'{workers} | {reading} | {median:,.0f} | '
            f'{min(rates[loader]):,.0f}-{max(rates[loader]):,.0f} | '
            f'{median / base:.2f}x |'
        )
        rows.append(row)
        print(row, flush=True)
  footer = [
      '',
      *notes,
      f'Load average after: {" ".join(f"{x:.2f}" for x in os.getloadavg())};'
      f' wall time {time.perf_counter() - wall:.0f} s.',
  ]
  print('\n'.join(footer), flush=True)
  if args.output:
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(
        '\n'.join(header + rows + footer) + '\n', encoding='utf-8'
    )


if __name__ == '__main__':
  main()
