"""Paper-style reports of a sweep: reading the runs (collect.py), cells and Mann-Whitney
tests per budget (stats.py), the Table 1 forms (tables.py), nnActive's evaluation
(nnactive.py), the ablations and controls (ablation.py), pseudo-label quality (pseudo.py),
the benchmark's measured power (power.py), figures (plots.py), number formats (fmt.py),
and `write_report` (build.py).
"""

from assft_jax.report.build import OUTPUTS, write_report
from assft_jax.report.collect import (
  BudgetSpec,
  ReportError,
  RunResult,
  display_name,
  load_runs,
)
from assft_jax.report.stats import Summary, mann_whitney_p, summarize

__all__ = [
  "OUTPUTS",
  "BudgetSpec",
  "ReportError",
  "RunResult",
  "Summary",
  "display_name",
  "load_runs",
  "mann_whitney_p",
  "summarize",
  "write_report",
]
