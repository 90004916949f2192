"""MNIST explainability experiment: ``python -m experiments.explain_mnist``.

The same program as the ``bort-explain`` console script
(:mod:`bort_jax.programs.explain.main`); run with ``--help`` for the options.

Example::

  python -m experiments.explain_mnist --out reports/explain_mnist
"""

import sys

from bort_jax.programs.explain.main import main

if __name__ == '__main__':
  sys.exit(main())
