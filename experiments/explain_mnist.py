"""MNIST explainability experiment: ``python -m experiments.explain_mnist``.

The same program as the ``bort-explain`` console script
(:mod:`bort_jax.explain.cli`); run with ``--help`` for the options.

Example::

  python -m experiments.explain_mnist --out reports/explain_mnist
"""

import sys

from bort_jax.explain.cli import main

if __name__ == '__main__':
  sys.exit(main())
