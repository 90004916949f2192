"""The protocol's report: ``report.json``, PNG figures, ``report.md``.

Every number is the mean over seeds with its 95% Student-t interval
(``mean ± half-width``; with 3 seeds the t quantile is 4.30, so intervals
are wide). Comparisons are paired: Bort minus baseline (or Bort over
baseline) per seed, the seed fixing initialisation and data order, then
averaged. The protocol's acceptance criteria (:func:`acceptance`) are
computed from the numbers and stated met or not.

* :mod:`.comparisons`: the paired comparisons and the acceptance criteria;
* :mod:`.markdown`: ``report.md``, the prose of ``template.md`` with one
  text per section (:mod:`.reconstruction`, :mod:`.saliency`,
  :mod:`.adversarial` for the three measured claims);
* :mod:`.plots`: the figures;
* :mod:`.writer`: all of them and ``report.json``.
"""

from bort_jax.programs.explain.report.comparisons import (
    ACCEPTANCE_ARCHITECTURE,
    ACCEPTANCE_LAYER,
    acceptance,
    comparisons,
)
from bort_jax.programs.explain.report.markdown import write_markdown
from bort_jax.programs.explain.report.plots import write_figures
from bort_jax.programs.explain.report.text import (
    describe_intervals,
    describe_runs,
    format_ci,
)
from bort_jax.programs.explain.report.writer import write_report

__all__ = [
    'ACCEPTANCE_ARCHITECTURE',
    'ACCEPTANCE_LAYER',
    'acceptance',
    'comparisons',
    'describe_intervals',
    'describe_runs',
    'format_ci',
    'write_figures',
    'write_markdown',
    'write_report',
]
