"""Paper-style reports of a sweep: tables (tables.py), statistics (stats.py), figures
(plots.py), reading the runs (collect.py), and `write_report` (build.py).
"""

from assft_jax.report.build import OUTPUTS, write_report
from assft_jax.report.collect import ReportError, RunResult, display_name, load_runs
from assft_jax.report.stats import Summary, mann_whitney_p, summarize

__all__ = [
  "OUTPUTS",
  "ReportError",
  "RunResult",
  "Summary",
  "display_name",
  "load_runs",
  "mann_whitney_p",
  "summarize",
  "write_report",
]
