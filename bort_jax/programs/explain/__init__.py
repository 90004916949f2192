"""``bort-explain``: the MNIST explainability experiment and its report.

* :mod:`~bort_jax.programs.explain.main`: the command line; trains the
  baseline/Bort pairs with the library loop or reads ``bort-train`` work
  directories;
* :mod:`~bort_jax.programs.explain.experiment`: the measurements, built on
  the procedures of :mod:`bort_jax.explain`;
* :mod:`~bort_jax.programs.explain.report` and
  :mod:`~bort_jax.programs.explain.figures`: ``report.json``, ``report.md``
  and the PNG figures.
"""
