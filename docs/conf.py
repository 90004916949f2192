"""Sphinx configuration of the bort_jax documentation.

Build (from the repository root, with the ``docs`` extra installed)::

  sphinx-build -W --keep-going -b html docs docs/_build/html

The API pages document each package by its public names (``__all__``), so
they follow the code without listing modules by hand. Nothing here reaches
the network: no intersphinx, and the quickstart notebook is rendered as
committed, with its stored outputs (``python
experiments/notebooks/build_quickstart.py --execute`` makes them;
``tests/test_notebook.py`` checks that they are those of its current code).
Read the Docs runs the same command (``.readthedocs.yaml``).
"""

import importlib
import importlib.util
import inspect
import os
import re
import sys

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docutils import SphinxDirective

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
if importlib.util.find_spec('bort_jax') is None:
  sys.path.insert(0, ROOT)

import bort_jax

project = 'bort_jax'
author = 'The bort_jax authors'
copyright = 'The bort_jax authors'
release = bort_jax.__version__
version = release

extensions = [
    'myst_nb',  # Markdown pages (MyST) and the notebook; includes myst_parser.
    'sphinx.ext.autodoc',
    'sphinx.ext.mathjax',
    'sphinx.ext.napoleon',
    'sphinx.ext.viewcode',
]

exclude_patterns = ['_build', 'Thumbs.db', '.DS_Store', '**.ipynb_checkpoints']

# Markdown: ``$...$`` maths, ``:::`` fences, and anchors for ``#`` headings so
# pages can link to ``method.md#3-modes``-style targets.
myst_enable_extensions = ['colon_fence', 'dollarmath']
myst_heading_anchors = 3

# The notebook is rendered as committed, with its stored outputs (figures
# included): executing it would train models and need MNIST in every build.
nb_execution_mode = 'off'

# Optional dependencies of the package (data preparation, checkpoints,
# progress bars, figures, configs). Installed ones are imported as they are;
# missing ones are mocked, since the API pages need their names, not their
# code. (A mocked tensorflow_datasets cannot be subclassed with keyword
# arguments, so the programs page needs the real one: install the package
# with all its extras to build the complete site.)
autodoc_mock_imports = [
    name
    for name in (
        'array_record',
        'dm_pix',
        'matplotlib',
        'ml_collections',
        'orbax',
        'PIL',
        'tensorflow_datasets',
        'tqdm',
    )
    if importlib.util.find_spec(name) is None
]

autodoc_default_options = {
    'members': True,
    'undoc-members': True,
    'show-inheritance': True,
}
autodoc_member_order = 'bysource'
autodoc_typehints = 'signature'
# Long unions shown by the name they have in the code (works for modules with
# ``from __future__ import annotations``; a name not found changes nothing).
autodoc_type_aliases = {
    alias: target
    for target in (
        'optax.ScalarOrSchedule',
        'jax.lax.PrecisionLike',
        'correction.Amplitude',
        'correction.Mode',
        'masking.MaskOrFn',
        'masking.DimensionNumbersOrFn',
    )
    for alias in (target, target.rsplit('.', 1)[-1])
}
autodoc_preserve_defaults = True
autoclass_content = 'class'

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# ``Attributes:`` sections become fields of the class entry, not entries of
# their own (the dataclass fields are entries already).
napoleon_use_ivar = True

# Cross-references that cannot be resolved offline (jax, optax, flax types in
# signatures) are left as plain text instead of failing the build.
nitpicky = False

html_theme = 'furo'
html_title = f'bort_jax {release}'
html_static_path = []


def _skip_member(app, what, name, obj, skip, options):
  """Skips members documented elsewhere on the page or the site."""
  if _is_namedtuple_field(obj) or _documented_at_top_level(what, name):
    return True
  return skip


def _is_namedtuple_field(obj):
  """A ``NamedTuple`` field: the class docstring's ``Attributes:`` has it."""
  return (getattr(obj, '__doc__', None) or '').startswith(
      'Alias for field number'
  )


def _documented_at_top_level(what, name):
  """Documents ``bort_jax.optimizer`` names only where ``bort_jax`` lacks them.

  ``bort_jax`` re-exports the optimizer API, and the API reference documents
  those names once, under ``bort_jax``; its ``bort_jax.optimizer`` page keeps
  whatever the package does not re-export.
  """
  return (
      what == 'module'
      and _current_module.name == 'bort_jax.optimizer'
      and name.rsplit('.', 1)[-1] in _top_level_names()
  )


class _CurrentModule:
  name = None


_current_module = _CurrentModule()


def _public_names(module):
  """``module.__all__``, or its names without a leading underscore."""
  names = getattr(module, '__all__', None)
  if names is None:
    names = sorted(n for n in vars(module) if not n.startswith('_'))
  return list(names)


def _top_level_names():
  return set(_public_names(bort_jax))


def _remember_module(app, what, name, obj, options, lines):
  del app, obj, options, lines
  if what == 'module':
    _current_module.name = name


class PublicConstants(SphinxDirective):
  """``.. public-constants:: MODULE``: the constants of ``MODULE.__all__``.

  autodoc documents the functions and classes a package re-exports, but not
  its constants (tuples of names, defaults, type aliases): those it finds
  only in the module that assigns them. This directive documents every name
  of ``__all__`` (or public name) that is neither a class, a function nor a
  module, with its value and the doc comment (``#:``) of its assignment.
  Names that ``MODULE`` assigns itself with a doc comment are left to
  autodoc.
  """

  required_arguments = 1

  def run(self):
    module_name = self.arguments[0]
    module = importlib.import_module(module_name)
    documented_by_autodoc = _attr_docs(module_name)
    lines = []
    for name in _public_names(module):
      value = getattr(module, name)
      if (
          inspect.isclass(value)
          or inspect.isroutine(value)
          or (inspect.ismodule(value))
          or ('', name) in documented_by_autodoc
      ):
        continue
      shown = repr(value)
      if len(shown) > 100:
        shown = shown[:97] + '...'
      lines += [
          f'.. py:data:: {name}',
          f'   :module: {module_name}',
          f'   :value: {shown}',
          '',
      ]
      lines += ['   ' + line for line in _assignment_doc(module_name, name)]
      lines.append('')
    container = nodes.section()
    self.state.nested_parse(
        StringList(lines, source=f'<public-constants {module_name}>'),
        self.content_offset,
        container,
    )
    return container.children


def _assignment_doc(package_name, name):
  """The doc comment of ``name`` where a module of the package assigns it."""
  value = getattr(importlib.import_module(package_name), name)
  for module_name, module in sorted(sys.modules.items()):
    if not module_name.startswith(package_name) or module is None:
      continue
    if vars(module).get(name) is not value:
      continue
    attr_docs = _attr_docs(module_name)
    if ('', name) in attr_docs:
      return list(attr_docs[('', name)])
  return []


def _attr_docs(module_name):
  """The doc comments of ``module_name``'s assignments (autodoc shows them)."""
  try:
    return ModuleAnalyzer.for_module(module_name).find_attr_docs()
  except Exception:  # noqa: BLE001 - no source: no comment to show.
    return {}


def _plain_aliases(app, what, name, obj, options, signature, return_annotation):
  """Shows an alias in a union (``MaskOrFn | None``) by its name alone.

  Sphinx writes such an alias as ``TypeAliasForwardRef('masking.MaskOrFn')``.
  """
  del app, what, name, obj, options

  def plain(text):
    if text is None:
      return None
    return re.sub(r"TypeAliasForwardRef\('([^']+)'\)", r'\1', text)

  return plain(signature), plain(return_annotation)


def setup(app):
  app.connect('autodoc-process-signature', _plain_aliases)
  app.add_directive('public-constants', PublicConstants)
  app.connect('autodoc-process-docstring', _remember_module)
  app.connect('autodoc-skip-member', _skip_member)
