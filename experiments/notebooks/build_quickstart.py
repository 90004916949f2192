"""Writes quickstart.ipynb from the cells below (run after editing them).

  python experiments/notebooks/build_quickstart.py
"""

from pathlib import Path

import nbformat

CELLS = [
    ('markdown', """# bort_jax quickstart

Bort keeps each weight matrix bounded and orthogonal (`W Wᵀ → a I`) with one
extra term in the optimizer update. This notebook chains Bort into an optax
optimizer, trains a small MNIST MLP briefly next to a plain AdamW baseline, and
shows what Bort buys: near-orthogonal weights, inputs recovered from the
hidden layer with the transposed weights, and a saliency map."""),
    ('code', """# On Colab: install bort_jax from its repository once (edit the URL to yours).
import importlib.util
BORT_JAX_REPO = 'https://github.com/YOUR-ORG/bort_jax'
if importlib.util.find_spec('bort_jax') is None:
    %pip install -q "git+$BORT_JAX_REPO\""""),
    ('code', """import os
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
test_batch = next(data.make_eval_iterator('mnist', batch_size=512, data_dir=DATA_DIR, download=DOWNLOAD))"""),
    ('markdown', """## Bort in an optax chain

`add_bort_correction(gamma)` adds `gamma · Δ(θ)` with `Δ(W) = W Wᵀ W − a W` to
the updates of every Dense/Conv kernel (never biases). Placed before the
learning-rate scaling, it is decoupled from Adam's normalisation, like AdamW's
weight decay: this chain is `bort_jax.bort_adamw`."""),
    ('code', """def make_optimizer(gamma):
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
          f"mean |cos| {float(summary['mean_abs_cosine/mean']):.3f}")"""),
    ('markdown', """## `WᵀW` of the hidden layer, before and after

The Gram matrix of the first 64 hidden units' weight vectors. Bort pulls it
to the identity; AdamW leaves the units correlated."""),
    ('code', """def gram(kernel, units=64):
    w = kernel[:, :units]
    return w.T @ w

panels = [('initial', initial_kernel)] + [
    (f'after {name}', models[name].get_layer('fc1').kernel[...]) for name in models]
fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
for ax, (title, kernel) in zip(axes, panels):
    image = ax.imshow(gram(kernel), cmap='RdBu_r', vmin=-1.5, vmax=1.5)
    ax.set_title(f'WᵀW {title}')
    ax.axis('off')
fig.colorbar(image, ax=axes, shrink=0.8)
plt.show()"""),
    ('markdown', """## Reconstruction from the hidden layer

`explain.reconstruct` inverts the layers one by one: LeakyReLU exactly, the
Dense layer with its transposed (norm-scaled) weights."""),
    ('code', """images = test_batch['image'][:6]
fig, axes = plt.subplots(3, 6, figsize=(9, 4.8))
rows = [('input', images)]
for name, model in models.items():
    hidden = model.forward_to(images, 'fc1_lrelu')
    recon = explain.reconstruct(model, hidden, 'fc1_lrelu', images.shape[1:])
    print(f'{name:6s} reconstruction MSE {float(explain.mse(recon, images).mean()):.4f}')
    rows.append((name, recon))
for r, (title, row) in enumerate(rows):
    for c in range(6):
        axes[r, c].imshow(row[c, ..., 0], cmap='gray')
        axes[r, c].axis('off')
    axes[r, 0].set_title(title, loc='left')
plt.show()"""),
    ('markdown', """## A saliency map

Gradient × input for the predicted class, for the Bort-trained model (the
convolutional models also support the paper's backtracking saliency,
`explain.backtracking_saliency`)."""),
    ('code', """model = models['bort']
x = test_batch['image'][:4]
predicted = jnp.argmax(model(x), -1)
saliency = explain.attribution_map(explain.gradient_x_input(model, x, predicted))
fig, axes = plt.subplots(2, 4, figsize=(8, 4))
for i in range(4):
    axes[0, i].imshow(x[i, ..., 0], cmap='gray')
    axes[0, i].set_title(f'predicted {int(predicted[i])}')
    axes[1, i].imshow(saliency[i], cmap='inferno')
    for ax in axes[:, i]:
        ax.axis('off')
plt.show()"""),
    ('markdown', """## Explain a model of your own

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
inverse with `explain.register_inverse(LayerType, inverse_fn)`."""),
    ('code', """import functools

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
fig, axes = plt.subplots(4, 6, figsize=(9, 6.4))
for r, (title, row) in enumerate(rows):
    for c in range(6):
        axes[r, c].imshow(row[c], cmap='gray' if r < 3 else 'RdBu_r')
        axes[r, c].axis('off')
    axes[r, 0].set_title(title, loc='left')
plt.show()"""),
]


def build() -> nbformat.NotebookNode:
  notebook = nbformat.v4.new_notebook()
  notebook.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3',
                                     'language': 'python'}
  notebook.metadata['colab'] = {'provenance': []}
  for kind, source in CELLS:
    make = nbformat.v4.new_markdown_cell if kind == 'markdown' else nbformat.v4.new_code_cell
    notebook.cells.append(make(source))
  return notebook


if __name__ == '__main__':
  path = Path(__file__).with_name('quickstart.ipynb')
  nbformat.write(build(), path)
  print(f'wrote {path}')
