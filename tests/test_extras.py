"""A core-only install: importing a part that needs an extra names the extra."""

import importlib
import sys
import tomllib

import pytest

from bort_jax import _extras

# (module imported, a module of its extra that is missing, the extra)
CASES = [
    ('bort_jax.models', 'flax', 'models'),
    ('bort_jax.configs', 'ml_collections', 'train'),
    ('bort_jax.data', 'PIL', 'train'),
    ('bort_jax.programs.train', 'ml_collections', 'train'),
    ('bort_jax.programs.prepare_mnist', 'tensorflow_datasets', 'train'),
    ('bort_jax.programs.explain.main', 'matplotlib', 'explain'),
    ('bort_jax.explain', 'dm_pix', 'explain'),
    ('bort_jax.explain', 'flax', 'explain'),
    ('bort_jax.training', 'flax', 'train'),
]


def _forget(monkeypatch, module):
  """Removes ``module`` and its submodules from ``sys.modules`` for the test
  (monkeypatch puts them back), so that importing it runs its code again."""
  for name in list(sys.modules):
    if name == module or name.startswith(module + '.'):
      monkeypatch.delitem(sys.modules, name)


@pytest.mark.parametrize('module, missing, extra', CASES)
def test_missing_extra_names_it(monkeypatch, module, missing, extra):
  monkeypatch.setitem(
      sys.modules, missing, None
  )  # import fails, find_spec None
  _forget(monkeypatch, '.'.join(module.split('.')[:2]))  # bort_jax.<part>
  with pytest.raises(ModuleNotFoundError) as info:
    importlib.import_module(module)
  message = str(info.value)
  assert f'pip install "bort-jax[{extra}]"' in message, message
  assert missing in message


def test_data_sets_need_tfds_named_on_first_use(monkeypatch, tmp_path):
  """``bort_jax.data`` imports without tfds; opening a data set needs it."""
  from bort_jax import data

  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', None)
  _forget(monkeypatch, 'bort_jax.data.mnist_idx')
  with pytest.raises(ModuleNotFoundError, match=r'bort-jax\[train\]'):
    data.open_split('cifar10', data_dir=tmp_path)


def test_other_missing_modules_are_not_blamed_on_an_extra():
  with pytest.raises(ModuleNotFoundError, match="'no_such_module'"):
    with _extras.extra_imports('bort_jax.models', 'models'):
      import no_such_module  # noqa: F401


def test_extra_modules_follow_pyproject(repo_root):
  """One import name per requirement of each extra in pyproject.toml."""
  project = tomllib.loads((repo_root / 'pyproject.toml').read_text())
  extras = project['project']['optional-dependencies']
  for extra, modules in _extras.EXTRA_MODULES.items():
    assert len(modules) == len(extras[extra]), (extra, extras[extra])
