"""experiments/notebooks/quickstart.ipynb: it runs, it prints what its
figures show, and its committed outputs are those of its current code."""

import importlib.util
import re
import tomllib

import nbformat
import pytest

pytestmark = pytest.mark.expensive

NOTEBOOK_DIR = 'experiments/notebooks'

# Appended to the executed copy: the text of every open figure (under the
# Agg backend plt.show() leaves them open), one JSON list on stdout.
COLLECT_FIGURE_TEXTS = """
import json as _json
import matplotlib.pyplot as _plt
import matplotlib.text as _text
print('FIGURE TEXTS ' + _json.dumps([
    t.get_text() for n in _plt.get_fignums()
    for t in _plt.figure(n).findobj(_text.Text)]))
"""


def _builder(repo_root):
  spec = importlib.util.spec_from_file_location(
      'build_quickstart', repo_root / NOTEBOOK_DIR / 'build_quickstart.py'
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _committed(repo_root):
  return nbformat.read(
      repo_root / NOTEBOOK_DIR / 'quickstart.ipynb', as_version=4
  )


def _stdout(cell):
  return ''.join(
      o.get('text', '')
      for o in cell.get('outputs', [])
      if o.output_type == 'stream' and o.name == 'stdout'
  )


def _masked(text):
  """The text with every number replaced by '#'."""
  return re.sub(r'-?\d+(\.\d+)?', '#', text)


def _makes_figure(cell):
  return cell.cell_type == 'code' and 'plt.show()' in cell.source


@pytest.fixture(scope='module')
def executed(repo_root, mnist_data_dir):
  """The notebook built from its script, run headless; and its figures' text."""
  notebook = _builder(repo_root).build()
  notebook.cells.append(nbformat.v4.new_code_cell(COLLECT_FIGURE_TEXTS))
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv('TFDS_DATA_DIR', mnist_data_dir)
    patch.setenv('MPLBACKEND', 'Agg')
    patch.delenv('BORT_MNIST_IDX_DIR', raising=False)
    _builder(repo_root).execute(notebook)
  last = _stdout(notebook.cells.pop())
  texts = last.split('FIGURE TEXTS ', 1)[1]
  import json

  return notebook, json.loads(texts)


def test_notebook_prints_both_models_and_the_blank_reference(executed):
  notebook, _ = executed
  printed = ''.join(_stdout(c) for c in notebook.cells)
  for line in (
      'baseline test accuracy',
      'Bort     test accuracy',
      'baseline, transpose',
      'baseline, pinv',
      'Bort, transpose',
      'Bort, pinv',
      'blank image (reference)          0.000',
      'Bort: mass on the digit',
      'own CNN, baseline',
      'own CNN, Bort',
  ):
    assert line in printed, line


def test_printed_numbers_are_those_in_the_figures(executed):
  notebook, figure_texts = executed
  shown = ' '.join(figure_texts)
  cells = [c for c in notebook.cells if _makes_figure(c)]
  assert len(cells) == 3
  for cell in cells:
    numbers = re.findall(r'-?\d+\.\d+', _stdout(cell))
    assert numbers, cell.source
    missing = [n for n in numbers if n not in shown]
    assert not missing, (missing, _stdout(cell))


def test_committed_outputs_are_those_of_the_current_code(repo_root, executed):
  """The stored printed lines are those a fresh run prints (numbers aside:
  they differ between machines in the last digits), and each figure cell
  stores its PNG."""
  notebook, _ = executed
  committed = _committed(repo_root)
  assert len(committed.cells) == len(notebook.cells)
  for stored, fresh in zip(committed.cells, notebook.cells):
    assert stored.source == fresh.source
    if stored.cell_type != 'code' or '%pip install' in stored.source:
      continue
    assert _masked(_stdout(stored)) == _masked(_stdout(fresh))
    if _makes_figure(stored):
      assert any(
          'image/png' in o.get('data', {}) for o in stored.outputs
      ), stored.source[:200]


def test_notebook_is_built_from_its_script(repo_root):
  built = [cell.source for cell in _builder(repo_root).build().cells]
  assert built == [cell.source for cell in _committed(repo_root).cells]


def test_install_cell_and_badges_use_the_repository_url(repo_root):
  """The notebook installs from pyproject's repository URL (only on Colab),
  and the Colab badges point at the notebook in that repository."""
  urls = tomllib.loads((repo_root / 'pyproject.toml').read_text())['project'][
      'urls'
  ]
  repository = urls['Repository']
  path = repository.removeprefix('https://github.com/')
  badge = (
      f'https://colab.research.google.com/github/{path}/blob/main/'
      f'{NOTEBOOK_DIR}/quickstart.ipynb'
  )
  sources = [cell.source for cell in _committed(repo_root).cells]
  install = [s for s in sources if '%pip install' in s]
  assert len(install) == 1, install
  assert f'"bort-jax[all] @ git+{repository}"' in install[0]
  assert "if 'google.colab' in sys.modules:" in install[0]
  assert badge in sources[0]
  assert badge in (repo_root / 'README.md').read_text()
  for text in sources + [(repo_root / 'README.md').read_text()]:
    assert 'YOUR-ORG' not in text
