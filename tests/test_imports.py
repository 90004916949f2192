"""The layers import only downwards: library packages import without the
programs, without tensorflow-datasets or orbax, and without cycles."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'bort_jax'
LIBRARY = (
    'bort_jax.optimizer',
    'bort_jax.models',
    'bort_jax.configs',
    'bort_jax.data',
    'bort_jax.explain',
    'bort_jax.training',
)
# Imported by a package root only where it is needed.
HEAVY = ('bort_jax.programs', 'tensorflow_datasets', 'orbax')


def test_library_roots_import_no_program_and_no_io_library():
  script = (
      'import sys\n'
      f'import {", ".join(LIBRARY)}\n'
      f'bad = sorted(m for m in sys.modules if m.startswith({HEAVY!r}))\n'
      'print(bad)\n'
      'assert not bad, bad\n'
  )
  result = subprocess.run(
      [sys.executable, '-c', script],
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert result.returncode == 0, result.stdout + result.stderr


def module_name(path: Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imported_modules(path: Path) -> set[str]:
  """The ``bort_jax`` modules a file imports, at any level of its code."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names.add(node.module)
      names.update(f'{node.module}.{alias.name}' for alias in node.names)
  return {name for name in names if name.startswith('bort_jax')}


def import_graph() -> dict[str, set[str]]:
  modules = {module_name(p): p for p in PACKAGE.rglob('*.py')}
  graph = {}
  for name, path in modules.items():
    graph[name] = {
        target
        for target in imported_modules(path)
        if target in modules and target != name
    }
  return graph


def test_no_library_module_imports_a_program():
  offenders = {
      name: sorted(t for t in targets if t.startswith('bort_jax.programs'))
      for name, targets in import_graph().items()
      if not name.startswith('bort_jax.programs')
  }
  assert not {k: v for k, v in offenders.items() if v}


def test_no_import_cycle_between_modules():
  """Module-level and function-level imports both count; a package counts as
  its ``__init__`` (so ``bort_jax`` importing ``bort_jax.optimizer`` is an edge).
  """
  graph = import_graph()
  # A package's __init__ imports its own submodules, which import siblings
  # through the package: that is not a cycle between layers, so edges from a
  # submodule to its own package (or an ancestor) are left out.
  for name, targets in graph.items():
    graph[name] = {t for t in targets if not name.startswith(t + '.')}
  state, stack = {}, []

  def visit(node):
    state[node] = 'open'
    stack.append(node)
    for target in sorted(graph[node]):
      if state.get(target) == 'open':
        pytest.fail(
            'import cycle: '
            + ' -> '.join(stack[stack.index(target) :] + [target])
        )
      if target not in state:
        visit(target)
    stack.pop()
    state[node] = 'done'

  for node in sorted(graph):
    if node not in state:
      visit(node)


PROGRAMS = (
    'bort_jax.programs.train',
    'bort_jax.programs.prepare_mnist',
    'bort_jax.programs.explain',
)


def test_no_program_imports_another_program():
  """Programs share bort_jax.programs.common, not each other's modules."""

  def program_of(module):
    return next(
        (p for p in PROGRAMS if module == p or module.startswith(p + '.')),
        None,
    )

  offenders = {
      name: sorted(
          t for t in targets if program_of(t) not in (None, program_of(name))
      )
      for name, targets in import_graph().items()
      if program_of(name)
  }
  assert not {k: v for k, v in offenders.items() if v}
