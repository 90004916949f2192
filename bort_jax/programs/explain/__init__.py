"""``bort-explain``: the MNIST explainability protocol and its report.

* :mod:`~bort_jax.programs.explain.main`: the command line, with its
  argument types and groups in :mod:`~bort_jax.programs.explain.args`;
* :mod:`~bort_jax.programs.explain.protocol`: which runs (architectures x
  seeds x baseline/Bort), training them with the library loop or reading
  them back (:mod:`~bort_jax.programs.explain.finished`);
* :mod:`~bort_jax.programs.explain.analysis`: every run of an architecture
  measured, the transfer test, the seeds aggregated
  (:mod:`~bort_jax.programs.explain.aggregation`: means and 95% intervals);
* :mod:`~bort_jax.programs.explain.measure`: the per-model measurements, one
  module per claim, built on the procedures of :mod:`bort_jax.explain`;
* :mod:`~bort_jax.programs.explain.experiment`: data and model helpers;
* :mod:`~bort_jax.programs.explain.report` and
  :mod:`~bort_jax.programs.explain.figures`: ``report.json``, ``report.md``
  (its prose in a template, one writer per section) and the PNG figures.
"""

from bort_jax._extras import require_extra

require_extra('bort_jax.programs.explain (bort-explain)', 'explain')
