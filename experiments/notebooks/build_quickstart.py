"""Writes quickstart.ipynb from the cells below (run after editing them).

python experiments/notebooks/build_quickstart.py
"""

from pathlib import Path

import nbformat

CELLS = [
    (
        'markdown',
        """# bort_jax quickstart

Bort keeps each weight matrix bounded and orthogonal (`W Wᵀ → a I`) with one
extra term in the optimizer update. This notebook chains Bort into an optax
optimizer, trains a small MNIST MLP briefly next to a plain AdamW baseline, and
shows what Bort buys: near-orthogonal weights, inputs recovered from the
hidden layer with the transposed weights, and a saliency map. Each figure puts
Bort and the baseline on one colour scale and prints its numbers beside it.

[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/bort-jax/bort_jax/blob/main/experiments/notebooks/quickstart.ipynb)
Locally, install the package and its extras first: `pip install "bort-jax[all] @ git+https://github.com/bort-jax/bort_jax"`
(or `pip install ".[all]"` in a clone).""",
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
import optax
from flax import nnx

import bort_jax
from bort_jax import data, explain
from bort_jax.models import MLP

# tfds downloads MNIST where there is internet; offline, point TFDS_DATA_DIR at
# a data dir prepared with `bort-prepare-mnist` and set BORT_OFFLINE=1.
DATA_DIR = os.environ.get('TFDS_DATA_DIR')
DOWNLOAD = not os.environ.get('BORT_OFFLINE')
TRAIN_STEPS = int(os.environ.get('BORT_QUICKSTART_STEPS', 300))

train_split = data.open_split('mnist', 'train', data_dir=DATA_DIR, download=DOWNLOAD, in_memory=True)
test_batch = next(data.make_eval_iterator('mnist', batch_size=512, data_dir=DATA_DIR, download=DOWNLOAD))""",
    ),
    (
        'markdown',
        """## Bort in an optax chain

`add_bort_correction(gamma)` adds `gamma · Δ(θ)` with `Δ(W) = W Wᵀ W − a W` to
the updates of every Dense/Conv kernel (never biases). Placed before the
learning-rate scaling, it is decoupled from Adam's normalisation, like AdamW's
weight decay: this chain is `bort_jax.bort_adamw`.""",
    ),
    (
        'code',
        """def make_optimizer(gamma):
    return optax.chain(
        optax.scale_by_adam(),
        optax.add_decayed_weights(1e-4, mask=bort_jax.default_mask),
        bort_jax.add_bort_correction(gamma),
        optax.scale_by_learning_rate(1e-3),
    )

@nnx.jit
def train_step(model, optimizer, images, labels):
    def loss_fn(model):
        logits = model(images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

models, optimizers = {}, {}
for name, gamma in [('adamw', 0.0), ('bort', 5.0)]:
    models[name] = MLP(activation='leaky_relu', rngs=nnx.Rngs(0))  # same init for both
    optimizers[name] = nnx.Optimizer(models[name], make_optimizer(gamma), wrt=nnx.Param)
initial_kernel = models['bort'].get_layer('fc1').kernel[...]

batches = data.make_train_iterator(train_split, batch_size=128, seed=0)
for step, batch in zip(range(TRAIN_STEPS), batches):
    for name in models:
        loss = train_step(models[name], optimizers[name], batch['image'], batch['label'])

for name, model in models.items():
    accuracy = jnp.mean(jnp.argmax(model(test_batch['image']), -1) == test_batch['label'])
    summary = bort_jax.summarize_report(bort_jax.orthogonality_report(nnx.state(model, nnx.Param)))
    print(f"{name:6s} test accuracy {float(accuracy):.3f}   "
          f"orthogonality error {float(summary['relative_error/mean']):.3f}   "
          f"mean |cos| {float(summary['mean_abs_cosine/mean']):.3f}")""",
    ),
    (
        'markdown',
        """## How far `WᵀW` is from the identity, before and after

Bort pulls the Gram matrix `G = WᵀW` of the hidden layer's 256 weight vectors
to the identity. `G` itself looks like the identity in all three cases (its
diagonal dominates), so the panels show what differs: `|G − I|` for the first
64 units, on one colour scale. The titles give the whole layer's relative
error `‖G − I‖_F / ‖I‖_F` and its largest `|G − I|` entry.""",
    ),
    (
        'code',
        """import numpy as np

def gram_error(kernel):
    w = np.asarray(kernel)
    return np.abs(w.T @ w - np.eye(w.shape[1]))

panels = [('initial', initial_kernel)] + [
    (f'after {name}', models[name].get_layer('fc1').kernel[...]) for name in models]
errors = [(title, gram_error(kernel)) for title, kernel in panels]
vmax = max(float(error[:64, :64].max()) for _, error in errors)  # shared scale
fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), layout='constrained')
for ax, (title, error) in zip(axes, errors):
    relative = np.linalg.norm(error) / np.sqrt(error.shape[0])
    image = ax.imshow(error[:64, :64], cmap='magma', vmin=0, vmax=vmax)
    ax.set_title(f'|WᵀW − I| {title}\\nrel. error {relative:.3f}, max {error.max():.3f}')
    ax.axis('off')
    print(f'{title:13s} ‖G − I‖/‖I‖ {relative:.3f}   max |G − I| {error.max():.3f}')
fig.colorbar(image, ax=axes, shrink=0.8, label='|G − I| (same scale)')
plt.show()""",
    ),
    (
        'markdown',
        """## Reconstruction from the hidden layer

`explain.reconstruct` inverts the layers one by one: LeakyReLU exactly, the
Dense layer with its transposed (norm-scaled) weights.""",
    ),
    (
        'markdown',
        """All images below share the input's grey scale (no per-image
rescaling, which would hide a reconstruction's wrong contrast); the number
under each image is its mean squared error against the input.""",
    ),
    (
        'code',
        """images = test_batch['image'][:6]
low, high = float(images.min()), float(images.max())  # one grey scale for all
fig, axes = plt.subplots(3, 6, figsize=(9, 5.4), layout='constrained')
rows = [('input', images, None)]
for name, model in models.items():
    hidden = model.forward_to(images, 'fc1_lrelu')
    recon = explain.reconstruct(model, hidden, 'fc1_lrelu', images.shape[1:])
    errors = explain.mse(recon, images)
    print(f'{name:6s} reconstruction MSE {float(errors.mean()):.4f}')
    rows.append((f'{name}: mean MSE {float(errors.mean()):.3f}', recon, errors))
for r, (title, row, errors) in enumerate(rows):
    for c in range(6):
        axes[r, c].imshow(row[c, ..., 0], cmap='gray', vmin=low, vmax=high)
        axes[r, c].set_xticks([])
        axes[r, c].set_yticks([])
        if errors is not None:
            axes[r, c].set_xlabel(f'{float(errors[c]):.3f}')
    axes[r, 0].set_title(title, loc='left')
plt.show()""",
    ),
    (
        'markdown',
        """## A saliency map

Gradient × input for each model's predicted class (the convolutional models
also support the paper's backtracking saliency,
`explain.backtracking_saliency`). Both models' maps of an image share one
colour scale; the number is the share of the map's mass on the digit's own
pixels (input above its background value).""",
    ),
    (
        'code',
        """x = test_batch['image'][:4]
maps = {}
for name, model in models.items():
    predicted = jnp.argmax(model(x), -1)
    maps[name] = (predicted, explain.attribution_map(explain.gradient_x_input(model, x, predicted)))
digit = np.asarray(x[..., 0] > x.min())  # the strokes
fig, axes = plt.subplots(3, 4, figsize=(8, 6.4), layout='constrained')
for i in range(4):
    axes[0, i].imshow(x[i, ..., 0], cmap='gray')
    axes[0, i].set_title(f'label {int(test_batch["label"][i])}')
    vmax = max(float(saliency[i].max()) for _, saliency in maps.values())
    for r, (name, (predicted, saliency)) in enumerate(maps.items(), 1):
        on_digit = float(saliency[i][digit[i]].sum() / saliency[i].sum())
        axes[r, i].imshow(saliency[i], cmap='inferno', vmin=0, vmax=vmax)
        axes[r, i].set_title(f'{name}: predicted {int(predicted[i])}', fontsize=9)
        axes[r, i].set_xlabel(f'{on_digit:.0%} on the digit', fontsize=9)
    for ax in axes[:, i]:
        ax.set_xticks([])
        ax.set_yticks([])
plt.show()""",
    ),
    (
        'markdown',
        """## Explain a model of your own

`explain.reconstruct` and the procedures built on it take any `nnx.Sequential`
too, not only the models of `bort_jax.models`: layers by index (negative
counts from the end), elements that are modules or plain functions
(`nnx.relu`, `functools.partial(nnx.leaky_relu, negative_slope=...)`, a
reshape). Below, a small CNN built here: two stride-2 2×2 convolutions, each
square (fan-in 2·2·C_in equals its output channels), so once Bort makes them
orthogonal the transposed weights invert them; a strong Bort term (γ = 50)
gets there within this short training. `method='pinv'` (each layer's
least-squares inverse) is the baseline that needs no Bort. The last row
backtracks, for each image, only the strongest channel of the 7×7×16 maps
(`explain.feature_visualization`): the input pattern that channel stands for.
A layer type
`reconstruct` does not know fails at once, naming the layer; declare its
inverse with `explain.register_inverse(LayerType, inverse_fn)`.""",
    ),
    (
        'code',
        """import functools

lrelu = functools.partial(nnx.leaky_relu, negative_slope=0.5)
rngs = nnx.Rngs(1)
cnn = nnx.Sequential(
    nnx.Conv(1, 4, (2, 2), strides=2, padding='VALID', rngs=rngs),   # 28x28x1 -> 14x14x4
    lrelu,
    nnx.Conv(4, 16, (2, 2), strides=2, padding='VALID', rngs=rngs),  # -> 7x7x16
    lrelu,
    lambda x: x.reshape(x.shape[0], -1),
    nnx.Linear(7 * 7 * 16, 10, rngs=rngs),
)
cnn_optimizer = nnx.Optimizer(cnn, make_optimizer(50.0), wrt=nnx.Param)
batches = data.make_train_iterator(train_split, batch_size=128, seed=1)
for step, batch in zip(range(TRAIN_STEPS), batches):
    train_step(cnn, cnn_optimizer, batch['image'], batch['label'])
accuracy = jnp.mean(jnp.argmax(cnn(test_batch['image']), -1) == test_batch['label'])
print(f'cnn    test accuracy {float(accuracy):.3f}')

x = test_batch['image'][:6]
z = explain.forward_to(cnn, x, 3)  # the second leaky ReLU: 7x7x16 maps
rows = [('input', x)]
for method in ('transpose', 'pinv'):
    x_hat = explain.reconstruct(cnn, z, 3, x.shape[1:], method=method)
    print(f'cnn    {method:9s} reconstruction MSE {float(explain.mse(x_hat, x).mean()):.5f}')
    rows.append((method, x_hat[..., 0]))
strongest = jnp.argmax(z.max(axis=(1, 2)), axis=-1)  # one channel per image
rows.append(('channel', explain.feature_visualization(cnn, x, 3, strongest)[..., 0]))
low, high = float(x.min()), float(x.max())  # the input's grey scale for rows 0-2
fig, axes = plt.subplots(4, 6, figsize=(9, 6.8), layout='constrained')
for r, (title, row) in enumerate(rows):
    for c in range(6):
        if r < 3:
            axes[r, c].imshow(row[c], cmap='gray', vmin=low, vmax=high)
        else:  # a pattern, signed: one symmetric scale per image
            limit = float(jnp.abs(row[c]).max())
            axes[r, c].imshow(row[c], cmap='RdBu_r', vmin=-limit, vmax=limit)
        axes[r, c].axis('off')
    if 0 < r < 3:
        title = f'{title}: MSE {float(explain.mse(row[..., None], x).mean()):.4f}'
    axes[r, 0].set_title(title, loc='left')
plt.show()""",
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
  for kind, source in CELLS:
    make = (
        nbformat.v4.new_markdown_cell
        if kind == 'markdown'
        else nbformat.v4.new_code_cell
    )
    notebook.cells.append(make(source))
  return notebook


if __name__ == '__main__':
  path = Path(__file__).with_name('quickstart.ipynb')
  nbformat.write(build(), path)
  print(f'wrote {path}')
