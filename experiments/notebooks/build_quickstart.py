"""Writes quickstart.ipynb from the cells below (run after editing them).

  python experiments/notebooks/build_quickstart.py --execute

``--execute`` runs the notebook (about a minute or two on a CPU; MNIST from
``$TFDS_DATA_DIR``, or built from ``$BORT_MNIST_IDX_DIR``, or downloaded) and
stores its outputs, which the documentation shows as they are; without it the
notebook is written without outputs. ``tests/test_notebook.py`` runs the
notebook again and checks that the stored outputs are those of these cells.
"""

import argparse
import tempfile
from pathlib import Path

import nbclient
import nbformat

CELLS = [
    (
        'markdown',
        """# What Bort buys, and what it does not: a quickstart

Bort keeps every weight matrix bounded and orthogonal (`W Wᵀ → a I`) with one
extra term in the optimizer update. This notebook trains the same CNN twice on
MNIST, with and without that term, and checks three claims, one figure each:

1. **Bort makes each layer orthogonal**: the singular values of every
   convolution's patch matrix gather at 1.
2. **The transposed weights then invert the network** in one pass, no
   iterations: the input comes back from the top convolutional layer. The
   least-squares inverse (`pinv`) is the comparison that needs no Bort.
3. **Bort does not make saliency maps better**: the paper's backtracking
   saliency gives much the same maps with and without Bort, and almost the
   same on an untrained network.

The model is `BortInvertibleCNN` (the `mnist_invertible_cnn` config of
`bort-train`), built so that the transposed weights *can* invert it: every
convolution has at least as many units as inputs per patch. Reconstructions
are scored with gain-invariant metrics (Pearson r, and the MSE after the best
gain and offset), next to what a blank image scores.

The training here is short (5,000 images, one epoch; a minute or two on a
CPU), so the numbers are rougher than those of the full protocol (3 seeds, all
60,000 images, 2 epochs), which are on the project's results page.

[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/bort-jax/bort_jax/blob/main/experiments/notebooks/quickstart.ipynb)
Locally, install the package and its extras first: `pip install "bort-jax[all] @ git+https://github.com/bort-jax/bort_jax"`
(or `pip install ".[all]"` in a clone).

**Without internet**, MNIST cannot be downloaded. Set one of these before
starting the notebook:

- `BORT_MNIST_IDX_DIR`: a folder with the four MNIST IDX `.gz` files; the
  notebook builds the data set from them (about 10 s) into `TFDS_DATA_DIR`.
- `TFDS_DATA_DIR`: a tfds data dir that already holds MNIST, e.g. one made by
  `bort-prepare-mnist --idx-dir IDX --data-dir DIR`.""",
    ),
    (
        'code',
        """# On Colab: install bort_jax with everything this notebook uses (about a
# minute). Elsewhere this cell does nothing: install it yourself as above.
import sys
if 'google.colab' in sys.modules:
    %pip install -q "bort-jax[all] @ git+https://github.com/bort-jax/bort_jax\"""",
    ),
    (
        'code',
        """import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx

import bort_jax
from bort_jax import data, explain
from bort_jax.models import BORT_INVERTIBLE_CNN_CLASSIFIER_PATTERN, BortInvertibleCNN

TRAIN_IMAGES, BATCH, LEARNING_RATE, GAMMA = 5000, 64, 2e-3, 100.0

DATA_DIR = os.environ.get('TFDS_DATA_DIR')  # None: ~/tensorflow_datasets
if os.environ.get('BORT_MNIST_IDX_DIR'):  # offline: build MNIST from the IDX files
    from bort_jax.data import mnist_idx
    mnist_idx.ensure_mnist(data.resolve_data_dir(DATA_DIR), os.environ['BORT_MNIST_IDX_DIR'])
train_split = data.open_split('mnist', f'train[:{TRAIN_IMAGES}]', data_dir=DATA_DIR,
                              download=True, in_memory=True)
test_batch = next(data.make_eval_iterator('mnist', batch_size=1000, data_dir=DATA_DIR,
                                          download=True))""",
    ),
    (
        'markdown',
        """## Train the same CNN with and without Bort

`add_bort_correction(gamma)` adds `gamma · (W Wᵀ W − a W)` to the update of
each kernel. Placed where AdamW adds its weight decay, the chain below is
`bort_jax.bort_adamw`; with `gamma = 0` it is plain AdamW, the baseline. Both
models start from the same initial weights and see the same batches. The
classifier is left out of the Bort term: its ten units are class templates,
not a code to invert.

The full recipe (`mnist_invertible_cnn`) uses `gamma = 30` over 2 epochs; this
one-epoch run on 5,000 images needs a stronger pull, `gamma = 100`, to get as
close to orthogonal.""",
    ),
    (
        'code',
        """steps = TRAIN_IMAGES // BATCH

def make_optimizer(gamma, frozen_pattern):
    return optax.chain(
        optax.scale_by_adam(),
        optax.add_decayed_weights(1e-4, mask=bort_jax.default_mask),
        bort_jax.add_bort_correction(gamma, mask=bort_jax.kernels_except(frozen_pattern)),
        optax.scale_by_learning_rate(optax.cosine_decay_schedule(LEARNING_RATE, steps)),
    )

@nnx.jit
def train_step(model, optimizer, images, labels):
    def loss_fn(model):
        logits = model(images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

def accuracy(model):
    return float(jnp.mean(jnp.argmax(model(test_batch['image']), -1) == test_batch['label']))

models = {'baseline': BortInvertibleCNN(rngs=nnx.Rngs(0)),   # same initial weights
          'Bort': BortInvertibleCNN(rngs=nnx.Rngs(0))}
untrained = BortInvertibleCNN(rngs=nnx.Rngs(0))               # kept for a sanity check
optimizers = {name: nnx.Optimizer(model, make_optimizer(0.0 if name == 'baseline' else GAMMA,
                                                        BORT_INVERTIBLE_CNN_CLASSIFIER_PATTERN),
                                  wrt=nnx.Param)
              for name, model in models.items()}
for batch in data.make_train_iterator(train_split, batch_size=BATCH, seed=0):
    for name in models:
        train_step(models[name], optimizers[name], batch['image'], batch['label'])
for name, model in models.items():
    print(f'{name:8s} test accuracy {accuracy(model):.3f} (first 1,000 test images)')""",
    ),
    (
        'markdown',
        """## Claim 1: Bort makes each layer orthogonal

Per patch, a convolution maps its `n` inputs (`kh·kw·C_in`) to `d` units
through the matrix `M = kernel.reshape(n, d)`. Bort drives every singular
value of `M` to `√a = 1`. Here `d ≥ n` in every layer, so singular values all
equal to 1 mean `M Mᵀ = I`: `Mᵀ` is then an exact inverse of the layer.""",
    ),
    (
        'code',
        """def singular_values(model, layer):
    kernel = np.asarray(model.get_layer(layer).kernel[...])
    return np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)

layers = ['conv1', 'down1', 'conv2', 'down2']
fig, axes = plt.subplots(1, 4, figsize=(12, 3.2), sharey=True, layout='constrained')
for ax, layer in zip(axes, layers):
    lines = []
    for name, color in (('baseline', 'tab:gray'), ('Bort', 'tab:blue')):
        s = singular_values(models[name], layer)
        ax.plot(s, color=color, label=name)
        lines.append(f'{name} {s.min():.3f} to {s.max():.2f}')
    print(f'{layer:5s} singular values: ' + ', '.join(lines))
    ax.set_title(f'{layer}\\n' + '\\n'.join(lines), fontsize=9)
    ax.set_xlabel('index (largest first)')
    ax.set_yscale('log')
axes[0].set_ylabel('singular value of the patch matrix')
axes[0].legend()
plt.show()""",
    ),
    (
        'markdown',
        """## Claim 2: with Bort, the transposed weights invert the network

`explain.reconstruct` maps the output of the top convolutional block
(`down2_lrelu`, 7×7×256) back to the input, layer by layer: each LeakyReLU
exactly, each convolution either with its transposed weights (`'transpose'`,
one transposed convolution) or by least squares (`'pinv'`, up to 100
conjugate-gradient iterations per layer).

Scores are per image, averaged over 64 test images: the Pearson correlation
with the input (1 is perfect) and the MSE after the best gain and offset
(`explain.affine_fitted_mse`, in the normalised input's units), so that a
reconstruction right up to brightness and contrast scores perfectly. A blank
image is the reference: r 0, and an affine-fitted MSE equal to the images'
variance. Each reconstruction is shown after that best gain and offset, on the
input's grey scale.""",
    ),
    (
        'code',
        """x = test_batch['image'][:64]

def affine_fit(x_hat, x):  # the best gain and offset of each image, for display
    hc = x_hat - x_hat.mean(axis=(1, 2, 3), keepdims=True)
    xc = x - x.mean(axis=(1, 2, 3), keepdims=True)
    gain = (hc * xc).sum(axis=(1, 2, 3), keepdims=True) / jnp.maximum((hc * hc).sum(axis=(1, 2, 3), keepdims=True), 1e-12)
    return gain * hc + x.mean(axis=(1, 2, 3), keepdims=True)

rows = []
for name, model in models.items():
    z = model.forward_to(x, 'down2_lrelu')
    for method in ('transpose', 'pinv'):
        x_hat = explain.reconstruct(model, z, 'down2_lrelu', x.shape[1:], method=method)
        rows.append((f'{name}, {method}', x_hat))
blank = jnp.zeros_like(x)
print(f'{"reconstruction from down2_lrelu":28s} {"Pearson r":>9s} {"affine-fitted MSE":>18s}')
labels = []
for title, x_hat in rows + [('blank image (reference)', blank)]:
    r = float(explain.pearson_r(x_hat, x).mean())
    error = float(explain.affine_fitted_mse(x_hat, x).mean())
    print(f'{title:28s} {r:9.3f} {error:18.4f}')
    labels.append(f'{title}: r {r:.3f}, affine-fitted MSE {error:.4f}')

fig = plt.figure(figsize=(10, 7.8), layout='constrained')
low, high = float(x.min()), float(x.max())
shown = [('input', x)] + [(label, affine_fit(x_hat, x)) for label, (_, x_hat) in zip(labels, rows)]
for row, (title, images) in zip(fig.subfigures(len(shown), 1), shown):
    row.suptitle(title, x=0.01, ha='left', fontsize=9)
    for c, ax in enumerate(row.subplots(1, 8)):
        ax.imshow(images[c, ..., 0], cmap='gray', vmin=low, vmax=high)
        ax.axis('off')
fig.suptitle(labels[-1], fontsize=9)
plt.show()""",
    ),
    (
        'markdown',
        """On the Bort model the one-pass transposed inverse recovers the digits,
as least squares does. On the baseline it does not: its layers' singular
values spread over orders of magnitude, and both inverses amplify the small
ones. The information is not lost in the baseline, though: in the full
protocol, optimisation-based inversion (100 Adam steps) recovers its input at
r 0.997. What Bort buys is that the cheap inverse, one transposed
convolution per layer, is exact. It costs accuracy: about 0.4 points in the
full protocol.""",
    ),
    (
        'markdown',
        """## Claim 3: Bort does not make saliency maps better

The paper's backtracking saliency (`explain.backtracking_saliency`, "SAT")
backtracks each channel's strongest activation through the transposed
weights. A saliency method should depend on what the network learned: the
model-randomisation sanity check compares a trained network's maps with those
of the same network at initialisation (Spearman rank correlation; near 1
means the maps do not depend on the training). The number under each map is
the share of its mass on the digit's strokes; a uniform map gets the strokes'
share of the image.""",
    ),
    (
        'code',
        """x = test_batch['image'][:4]
strokes = x[..., 0] > x.min()
maps = {name: explain.backtracking_saliency(model, x, 'down2_lrelu')
        for name, model in [*models.items(), ('untrained', untrained)]}
uniform = f'a uniform map: {float(strokes.mean()):.2f} on the digit'
print(uniform)
fig = plt.figure(figsize=(7.5, 8.4), layout='constrained')
rows = fig.subfigures(4, 1)
for c, ax in enumerate(rows[0].subplots(1, 4)):
    ax.imshow(x[c, ..., 0], cmap='gray')
    ax.set_title(f'label {int(test_batch["label"][c])}', fontsize=9)
    ax.axis('off')
rows[0].suptitle(f'input ({uniform})', x=0.01, ha='left', fontsize=9)
for row, (name, saliency) in zip(rows[1:], maps.items()):
    on_digit = explain.mass_on_mask(saliency, strokes)
    line = f'{name}: mass on the digit {float(on_digit.mean()):.2f}'
    if name != 'untrained':
        rho = float(explain.spearman_rank_correlation(saliency, maps['untrained']).mean())
        line += f', rank correlation with untrained {rho:.2f}'
    print(line)
    row.suptitle(line, x=0.01, ha='left', fontsize=9)
    for c, ax in enumerate(row.subplots(1, 4)):
        ax.imshow(saliency[c], cmap='inferno', vmin=0, vmax=1)
        ax.set_xlabel(f'{float(on_digit[c]):.2f}', fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
plt.show()""",
    ),
    (
        'markdown',
        """**Bort does not help saliency.** The maps of the Bort and baseline
models are alike, and both stay close to those of the untrained network: they
follow the ink of the digit more than what the network learned. The full
protocol measures the same on 3 seeds: SAT fails the model-randomisation
check on every CNN, with or without Bort (rank correlation 0.93 baseline,
0.95 Bort), and its deletion scores are no better than plain gradients'.""",
    ),
    (
        'markdown',
        """## Your own model

`explain.backtrack(f, x)` turns any JAX function into its backtracking map:
an NNX module with a `__call__` of its own, a linen model's `apply`, a plain
function. The procedures take the layer to explain as a function up to it.
Below, a module of two square stride-2 convolutions (fan-in 2·2·C_in equal
to the units) and a classifier, trained with and without Bort as above, and
reconstructed from its features; the guide "Explain your own model" goes
further.""",
    ),
    (
        'code',
        """import functools
from flax import linen

class SmallCNN(nnx.Module):
    def __init__(self, rngs):
        self.down1 = nnx.Conv(1, 4, (2, 2), strides=2, padding='VALID', rngs=rngs)   # 28x28x1 -> 14x14x4
        self.down2 = nnx.Conv(4, 16, (2, 2), strides=2, padding='VALID', rngs=rngs)  # -> 7x7x16
        self.head = nnx.Linear(7 * 7 * 16, 10, rngs=rngs)

    def features(self, x):
        x = jax.nn.leaky_relu(self.down1(x), 0.5)
        return jax.nn.leaky_relu(self.down2(x), 0.5)

    def __call__(self, x):
        return self.head(self.features(x).reshape(x.shape[0], -1))

x = test_batch['image'][:64]
for name, gamma in (('baseline', 0.0), ('Bort', GAMMA)):
    cnn = SmallCNN(nnx.Rngs(1))
    optimizer = nnx.Optimizer(cnn, make_optimizer(gamma, '^head/kernel$'), wrt=nnx.Param)
    for batch in data.make_train_iterator(train_split, batch_size=BATCH, seed=1):
        train_step(cnn, optimizer, batch['image'], batch['label'])
    features = lambda images: cnn.features(images)
    scores = [f'{method} r {float(explain.pearson_r(explain.reconstruct(cnn, features(x), features, x.shape[1:], method=method), x).mean()):.3f}'
              for method in ('transpose', 'pinv')]
    print(f'own CNN, {name:8s} test accuracy {accuracy(cnn):.3f}, reconstruction ' + ', '.join(scores))

# A linen model, untrained: least squares inverts its square layers exactly,
# the transposed weights only once Bort has made them orthogonal.
class LinenCNN(linen.Module):
    @linen.compact
    def __call__(self, x):
        x = linen.leaky_relu(linen.Conv(4, (2, 2), strides=2, padding='VALID')(x), 0.5)
        return linen.Conv(16, (2, 2), strides=2, padding='VALID')(x)

linen_model = LinenCNN()
f = functools.partial(linen_model.apply, linen_model.init(jax.random.key(0), x))
for method in ('transpose', 'pinv'):
    g = jax.jit(explain.backtrack(f, x, method))
    print(f'linen CNN, untrained: {method} r {float(explain.pearson_r(g(f(x)), x).mean()):.3f}')""",
    ),
    (
        'markdown',
        """## Where next

- `bort-train --config mnist_invertible_cnn --compare adamw,bort_adamw
  --workdir runs/invertible --download` trains the full recipe from the
  command line.
- `bort-explain` runs the whole protocol (3 architectures × 3 seeds,
  reconstruction from every layer, saliency sanity checks, adversarial
  samples); its report is the project's results page.""",
    ),
]


def build() -> nbformat.NotebookNode:
  notebook = nbformat.v4.new_notebook()
  notebook.metadata['kernelspec'] = {
      'name': 'python3',
      'display_name': 'Python 3',
      'language': 'python',
  }
  notebook.metadata['colab'] = {'provenance': []}
  for number, (kind, source) in enumerate(CELLS):
    make = (
        nbformat.v4.new_markdown_cell
        if kind == 'markdown'
        else nbformat.v4.new_code_cell
    )
    # Fixed ids, so that a rebuild changes only what changed.
    notebook.cells.append(make(source, id=f'cell-{number:02d}'))
  return notebook


def execute(
    notebook: nbformat.NotebookNode, timeout: int = 900
) -> nbformat.NotebookNode:
  """Runs every cell in a fresh kernel, in a temporary folder; in place."""
  with tempfile.TemporaryDirectory() as folder:
    nbclient.NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name='python3',
        record_timing=False,
        resources={'metadata': {'path': folder}},
    ).execute()
  for cell in notebook.cells:  # one stream output per stream, however flushed
    merged = []
    for output in cell.get('outputs', []):
      previous = merged[-1] if merged else None
      if (
          output.output_type == 'stream'
          and previous is not None
          and previous.output_type == 'stream'
          and previous.name == output.name
      ):
        previous.text += output.text
      else:
        merged.append(output)
    if cell.cell_type == 'code':
      cell.outputs = merged
  return notebook


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument(
      '--execute', action='store_true', help='run it and store the outputs'
  )
  args = parser.parse_args()
  path = Path(__file__).with_name('quickstart.ipynb')
  notebook = build()
  if args.execute:
    execute(notebook)
  nbformat.write(notebook, path)
  print(f'wrote {path}{" with its outputs" if args.execute else ""}')


if __name__ == '__main__':
  main()
