"""MNIST explainability protocol: ``python -m experiments.explain_mnist``.

The same program as the ``bort-explain`` console script
(:mod:`bort_jax.programs.explain.main`): three architectures x seeds 0, 1, 2
x baseline (``adamw``) / Bort (``bort_adamw``), measured and reported with
95% intervals over the seeds. Run with ``--help`` for the options.

Example::

  python -m experiments.explain_mnist --workdir runs/explain_protocol \\
      --data-dir /tmp/tfds --out experiments/results/explain_protocol
"""

import sys

from bort_jax.programs.explain.main import main

if __name__ == '__main__':
  sys.exit(main())
