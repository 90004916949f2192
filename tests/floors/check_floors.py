"""Runs the user-facing examples against whatever jax/flax/optax is installed.

Used to prove the declared minimum versions (``.ci/run`` does this on every
run): build the wheel, install it with the floors of its core dependencies in
a fresh venv, run the core part from another folder (so that ``bort_jax`` is
the installed wheel), add flax and run the models part:

  pip wheel --no-deps --wheel-dir /tmp/wheel .
  python3.11 -m venv /tmp/floor
  /tmp/floor/bin/pip install /tmp/wheel/bort_jax-*.whl \
      'jax==0.7.1' 'optax==0.2.4' 'chex==0.1.87'
  (cd /tmp && /tmp/floor/bin/python "$OLDPWD/tests/floors/check_floors.py" core)
  /tmp/floor/bin/pip install 'flax==0.12.0' dm-pix 'jax==0.7.1' \
      'optax==0.2.4' 'chex==0.1.87'
  (cd /tmp && /tmp/floor/bin/python "$OLDPWD/tests/floors/check_floors.py" models)

Both passed on 2026-11-30 with Python 3.11 and those versions. Below them:
jax 0.7.0 lacks ``jax.set_mesh`` (the README's explicit-sharding example),
flax 0.12.0 is the first with ``nnx.List`` (used by the models) and itself
requires jax >= 0.7.1 and Python >= 3.11.

Parts:

* ``core``: ``import bort_jax`` loads none of :data:`HEAVY_MODULES` (flax,
  tensorflow-datasets, orbax, matplotlib...); the README's python blocks that do not use flax and
  every block of docs/guides/bort_in_a_chain.md run; importing a part that
  needs an extra (:data:`CORE_ONLY_ERRORS`) fails naming that extra.
* ``models``: every README block (the NNX example included) runs, every model
  of ``bort_jax.models.MODEL_NAMES`` is built abstractly (``nnx.eval_shape``)
  and the small ones run a forward pass, and the examples of
  docs/guides/explain_your_model.md run.

It is a script, not a pytest module, so that a floor venv needs nothing but
the package's own dependencies. Exit status 0 when the part passed.
"""

import argparse
import importlib
import importlib.metadata
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
HEAVY_MODULES = (
    'flax',
    'tensorflow_datasets',
    'orbax',
    'matplotlib',
    'tqdm',
    'tensorboardX',
    'ml_collections',
)


# In a core-only install, importing each of these names its extra.
CORE_ONLY_ERRORS = {
    'bort_jax.models': 'models',
    'bort_jax.configs': 'train',
    'bort_jax.data': 'train',
    'bort_jax.programs.train': 'train',
    'bort_jax.explain': 'explain',
    'bort_jax.training': 'train',
}


def python_blocks(path):
  text = (ROOT / path).read_text()
  return re.findall(r'```python\n(.*?)```', text, flags=re.DOTALL)


def uses_flax(block):
  return 'flax' in block or 'nnx' in block


def run_blocks(path, blocks, namespace):
  for number, block in enumerate(blocks):
    print(f'  {path} block {number}', flush=True)
    code = compile(block, f'{path} python block {number}', 'exec')
    exec(code, namespace)  # noqa: S102 - running the examples is the check


def check_core():
  import bort_jax

  print(f'  bort_jax from {pathlib.Path(bort_jax.__file__).parent}')

  loaded = [m for m in HEAVY_MODULES if m in sys.modules]
  if loaded:
    raise AssertionError(f'import bort_jax loaded {loaded}')
  readme = [b for b in python_blocks('README.md') if not uses_flax(b)]
  run_blocks('README.md', readme, {})
  guide = 'docs/guides/bort_in_a_chain.md'
  run_blocks(guide, python_blocks(guide), {})
  # The parts that need an extra say which one.
  for module, extra in CORE_ONLY_ERRORS.items():
    try:
      importlib.import_module(module)
    except ModuleNotFoundError as error:
      if f'pip install "bort-jax[{extra}]"' not in str(error):
        raise AssertionError(f'{module}: {error} names no extra') from error
      print(f'  {module}: {error}')
    else:
      raise AssertionError(f'{module} imported in a core-only install')


def check_models():
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from bort_jax import models

  run_blocks('README.md', python_blocks('README.md'), {})
  small_inputs = {
      'mlp': (2, 28, 28, 1),
      'invertible_cnn': (2, 28, 28, 1),
      'bort_invertible_cnn': (2, 28, 28, 1),
  }
  for name in models.MODEL_NAMES:
    print(f'  model {name}', flush=True)
    build = lambda name=name: models.create_model(
        name, num_classes=10, rngs=nnx.Rngs(0)
    )
    abstract = nnx.eval_shape(build)
    leaves = jax.tree.leaves(nnx.state(abstract, nnx.Param))
    assert leaves, f'{name} has no parameters'
    if name in small_inputs:
      logits = build()(jnp.zeros(small_inputs[name]))
      assert logits.shape == (small_inputs[name][0], 10), (name, logits.shape)
  guide = 'docs/guides/explain_your_model.md'
  run_blocks(guide, python_blocks(guide), {})


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('part', choices=('core', 'models'))
  args = parser.parse_args()
  print(f'python {sys.version.split()[0]}')
  for package in ('jax', 'jaxlib', 'optax', 'chex', 'flax'):
    try:
      print(f'{package} {importlib.metadata.version(package)}')
    except importlib.metadata.PackageNotFoundError:
      print(f'{package} not installed')
  {'core': check_core, 'models': check_models}[args.part]()
  print(f'{args.part}: passed')


if __name__ == '__main__':
  main()
