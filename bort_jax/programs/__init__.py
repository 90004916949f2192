"""The programs: command lines built on the library, above it.

* ``bort-train`` (:mod:`~bort_jax.programs.train`): train a config, or
  compare optimizers on it;
* ``bort-prepare-mnist`` (:mod:`~bort_jax.programs.prepare_mnist`): build
  the tfds ``mnist`` data set from the four IDX files;
* ``bort-explain`` (:mod:`~bort_jax.programs.explain`): the MNIST
  explainability experiment and its report.

Programs import the library (:mod:`bort_jax.configs`, :mod:`bort_jax.data`,
:mod:`bort_jax.training`, :mod:`bort_jax.explain`...) and what they share
(:mod:`~bort_jax.programs.common`), never another program; no library
module imports a program.
"""

from bort_jax._extras import require_extra

require_extra('bort_jax.programs (bort-train, bort-prepare-mnist)', 'train')
