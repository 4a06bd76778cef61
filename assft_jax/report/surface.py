"""HD95 and NSD beside Dice: the Table 1 form (methods x budgets, mean ± SD over seeds) of
the surface metrics, when the runs' summaries carry them.

As for Dice, seeds are the replicates: each run's value is the mean over its test cases
of their per-case HD95 (mm; the mean over the case's classes) or NSD, NaN left out (HD95
is NaN where a class is in only one of prediction and label: the summaries count those
pairs as hd95_one_sided). Lower HD95 is better, higher NSD; no ranks or tests here.
"""

from __future__ import annotations

import math

import numpy as np

from assft_jax.report.fmt import DASH, markdown_table, num
from assft_jax.report.stats import Budget, Summary, sd

METRICS = (("hd95", "HD95 (mm)", 1.0), ("nsd", "NSD × 100", 100.0))


def seed_values(s: Summary, metric: str, r: int, method: str) -> np.ndarray:
  """[n_seeds] each run's mean `metric` over its test cases at round r (runs without the
  metric, or with every case NaN, left out)."""
  out = []
  for run in s.runs:
    for rr in run.rounds:
      if run.method == method and rr.round == r:
        v = [x for x in getattr(rr, f"{metric}_per_case").values() if not math.isnan(x)]
        out += [float(np.mean(v))] if v else []
  return np.array(out)


def has_metrics(s: Summary) -> bool:
  return any(rr.hd95_per_case or rr.nsd_per_case for run in s.runs for rr in run.rounds)


def tolerances(s: Summary) -> list[float]:
  """The NSD tolerances (mm) the runs used (one, unless the runs differ)."""
  tols = {rr.nsd_tolerance_mm for run in s.runs for rr in run.rounds}
  return sorted(t for t in tols if t is not None)


def _cell(v: np.ndarray, scale: float) -> str:
  if not len(v):
    return ""
  spread = sd(v)
  return f"{scale * v.mean():.2f} ± {DASH if math.isnan(spread) else f'{scale * spread:.2f}'}"


def rows(s: Summary, budgets: list[Budget]) -> list[list[str]]:
  """Header + one row per method: for each budget, an HD95 and an NSD column."""
  header = ["Methods"] + [f"{title}, {b.header}" for b in budgets for _, title, _ in METRICS]
  out = [header]
  for m in s.methods:
    row = [m]
    for b in budgets:
      row += [_cell(seed_values(s, k, b.round, m), scale) for k, _, scale in METRICS]
    out.append(row)
  return out


def long_rows(summaries: list[Summary]) -> list[list[str]]:
  """Machine-readable: one row per budget x method x round with either metric."""
  out = [
    [
      "budget",
      "method",
      "round",
      "label",
      "n_seeds",
      "hd95_mean_mm",
      "hd95_sd_mm",
      "nsd_mean_pct",
      "nsd_sd_pct",
      "nsd_tolerance_mm",
    ]
  ]
  for s in summaries:
    tol = ",".join(f"{t:g}" for t in tolerances(s))
    for b in s.budgets:
      for m in s.methods:
        hd, nsd = (seed_values(s, k, b.round, m) for k in ("hd95", "nsd"))
        if len(hd) or len(nsd):
          out.append(
            [s.spec.title, m, str(b.round), b.label, str(max(len(hd), len(nsd)))]
            + [num(hd.mean()) if len(hd) else "", num(sd(hd))]
            + [num(nsd.mean(), 100) if len(nsd) else "", num(sd(nsd), 100), tol]
          )
  return out


def markdown(s: Summary, budgets: list[Budget]) -> list[str]:
  """The report.md section; nothing when no run of this budget has surface metrics."""
  if not has_metrics(s):
    return []
  tols = tolerances(s)
  at = ", ".join(f"{t:g}" for t in tols) + " mm" if tols else "a tolerance not recorded"
  note = " (the runs differ: they do not compare)" if len(tols) > 1 else ""
  return [
    "### Surface metrics: seeds as replicates",
    "",
    f"HD95 in mm (lower is better) and NSD × 100 at {at}{note} (higher is better), mean ± "
    "SD over seeds of each run's mean over its test cases, NaN left out (HD95 is undefined "
    "where a class is only in the prediction or only in the ground truth; MONAI's "
    "definitions).",
    "",
    markdown_table(rows(s, budgets)),
  ]
