"""The package's optional parts, and import errors that name their extra.

``pip install bort-jax`` installs the core (the optax transformations). The
other subpackages need the packages of an extra (``pyproject.toml``); when
one is missing, importing the subpackage says which extra to install rather
than failing on a bare ``No module named ...``.

Example:
  >>> from bort_jax._extras import extra_imports
  >>> with extra_imports('bort_jax.models', 'models'):
  ...   import flax  # a ModuleNotFoundError here names "bort-jax[models]"
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator

# extra -> the top-level modules its requirements provide (pyproject.toml).
EXTRA_MODULES = {
    'models': ('flax',),
    'explain': ('flax', 'dm_pix', 'scipy', 'matplotlib'),
    'train': (
        'flax',
        'tensorflow_datasets',
        'grain',
        'importlib_resources',
        'PIL',
        'orbax',
        'ml_collections',
        'absl',
        'tqdm',
        'tensorboardX',
    ),
}


def missing_extra_error(
    package: str, extra: str, module: str
) -> ModuleNotFoundError:
  """The error for ``package`` lacking ``module`` of the extra ``extra``."""
  return ModuleNotFoundError(
      f'{package} needs {module}, which is not installed; it comes with the '
      f'"{extra}" extra: pip install "bort-jax[{extra}]" (or "bort-jax[all]")',
      name=module,
  )


@contextlib.contextmanager
def extra_imports(package: str, extra: str) -> Iterator[None]:
  """Re-raises a missing module of ``extra`` as an error naming the extra.

  Args:
    package: what is being imported, for the message (``'bort_jax.models'``).
    extra: the extra whose modules the block imports (``EXTRA_MODULES``).

  Raises:
    ModuleNotFoundError: a module of the extra is missing; the message says
      ``pip install "bort-jax[<extra>]"``. Other missing modules are
      re-raised as they are.
  """
  try:
    yield
  except ModuleNotFoundError as error:
    module = (error.name or '').split('.')[0]
    if module not in EXTRA_MODULES[extra]:
      raise
    raise missing_extra_error(package, extra, module) from None


def require_extra(package: str, extra: str) -> None:
  """Checks that every module of ``extra`` is installed, without importing it.

  Raises:
    ModuleNotFoundError: the first missing one, naming the extra.
  """
  for module in EXTRA_MODULES[extra]:
    if importlib.util.find_spec(module) is None:
      raise missing_extra_error(package, extra, module)
