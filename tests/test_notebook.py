"""experiments/notebooks/quickstart.ipynb runs end to end (small budget)."""

import pathlib

import nbclient
import nbformat
import pytest

pytestmark = pytest.mark.expensive

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / 'experiments' / 'notebooks' / 'quickstart.ipynb'


def test_quickstart_notebook_runs(tmp_path, monkeypatch, mnist_data_dir):
  monkeypatch.setenv('TFDS_DATA_DIR', mnist_data_dir)
  monkeypatch.setenv('BORT_OFFLINE', '1')
  monkeypatch.setenv('BORT_QUICKSTART_STEPS', '150')
  monkeypatch.setenv('MPLBACKEND', 'Agg')
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(
      notebook,
      timeout=600,
      kernel_name='python3',
      resources={'metadata': {'path': str(tmp_path)}},
  ).execute()
  outputs = ''.join(
      output.get('text', '')
      for cell in notebook.cells
      if cell.cell_type == 'code'
      for output in cell.get('outputs', [])
  )
  assert 'bort   test accuracy' in outputs and 'adamw  test accuracy' in outputs
  assert 'bort   reconstruction MSE' in outputs


def test_notebook_is_built_from_its_script():
  import importlib.util

  spec = importlib.util.spec_from_file_location(
      'build_quickstart', NOTEBOOK.with_name('build_quickstart.py')
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  built = [cell.source for cell in module.build().cells]
  assert built == [
      cell.source for cell in nbformat.read(NOTEBOOK, as_version=4).cells
  ]


def test_install_cell_and_badges_use_the_repository_url():
  """The notebook installs from pyproject's repository URL (only on Colab),
  and the Colab badges point at the notebook in that repository."""
  import tomllib

  urls = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['urls']
  repository = urls['Repository']
  path = repository.removeprefix('https://github.com/')
  badge = (
      f'https://colab.research.google.com/github/{path}/blob/main/'
      f'{NOTEBOOK.relative_to(ROOT).as_posix()}'
  )
  sources = [
      cell.source for cell in nbformat.read(NOTEBOOK, as_version=4).cells
  ]
  install = [s for s in sources if '%pip install' in s]
  assert len(install) == 1, install
  assert f'"bort-jax[all] @ git+{repository}"' in install[0]
  assert "if 'google.colab' in sys.modules:" in install[0]
  assert badge in sources[0]
  assert badge in (ROOT / 'README.md').read_text()
  for text in sources + [(ROOT / 'README.md').read_text()]:
    assert 'YOUR-ORG' not in text
