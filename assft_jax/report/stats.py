"""Pooling runs into method x budget cells, and the Mann-Whitney U tests.

Pooling (see notes/report.md): a cell's main statistic is the mean +- SD over the
per-case Dice of every seed concatenated (n = test cases x seeds), which is what the
Mann-Whitney U test compares. The seed-level view (mean +- SD of the seeds' means) is
kept beside it, since seeds are the independent replicates.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence

import numpy as np
import scipy.stats

from assft_jax.report.collect import RunResult, method_sort_key

SIGNIFICANCE = 0.01  # the paper's "*: p < 0.01"


@dataclasses.dataclass(frozen=True)
class Budget:
  """A table column: round r, its display label and (first seen) labeled count."""

  round: int
  label: str
  n_labeled: int

  @property
  def header(self) -> str:
    return f"{self.label} (r={self.round})"


def sd(x: np.ndarray) -> float:
  """Sample SD (ddof=1); 0.0 for a single value."""
  return float(np.std(x, ddof=1)) if len(x) > 1 else 0.0


@dataclasses.dataclass(frozen=True)
class ClassCell:
  """Per-class Dice of one method at one budget: one value per seed (the run's mean)."""

  values: np.ndarray

  @property
  def mean(self) -> float:
    return float(np.mean(self.values)) if len(self.values) else math.nan

  @property
  def sd(self) -> float:
    return sd(self.values)


@dataclasses.dataclass(frozen=True)
class Cell(ClassCell):
  """One method at one budget. `values`: [cases x seeds] pooled per-case Dice (no NaN)."""

  seed_means: np.ndarray  # [n_seeds] each run's mean over its cases
  n_nan: int  # per-case Dice dropped as NaN

  @property
  def seed_mean(self) -> float:
    return float(np.mean(self.seed_means)) if len(self.seed_means) else math.nan

  @property
  def seed_sd(self) -> float:
    return sd(self.seed_means)


@dataclasses.dataclass(frozen=True)
class Summary:
  """Everything the tables and plots show. Keys of the dicts: (method, round)."""

  methods: list[str]
  budgets: list[Budget]  # every round seen, r = 0 included
  cells: dict[tuple[str, int], Cell]
  pvalues: dict[tuple[str, int], float]  # vs the reference; absent if untestable
  reference: str | None  # None when no reference runs exist
  classes: list[str]
  class_cells: dict[tuple[str, int, str], ClassCell]
  lower: dict[str, Cell]  # method -> its bound; the same Cell for every method
  upper: dict[str, Cell]  # when it comes from separate lower/upper-bound runs
  seeds: dict[str, list[int]]
  incomplete: list[RunResult]
  bound_runs: list[RunResult]  # the lower/upper-bound runs

  def table_budgets(self, include_init: bool = False) -> list[Budget]:
    return [b for b in self.budgets if include_init or b.round > 0]


def _budgets(runs: Sequence[RunResult]) -> list[Budget]:
  first: dict[int, Budget] = {}
  for run in runs:
    for rr in run.rounds:
      first.setdefault(rr.round, Budget(rr.round, rr.label, rr.n_labeled))
  return [first[r] for r in sorted(first)]


def _cell(rounds: Iterable) -> Cell:
  per_seed = [np.asarray(list(rr.dice_per_case.values()), dtype=np.float64) for rr in rounds]
  kept = [v[~np.isnan(v)] for v in per_seed]
  n_nan = sum(len(v) - len(k) for v, k in zip(per_seed, kept))
  values = np.concatenate(kept) if kept else np.zeros(0)
  seed_means = np.array([k.mean() for k in kept if len(k)])
  return Cell(values=values, seed_means=seed_means, n_nan=n_nan)


def mann_whitney_p(x: np.ndarray, y: np.ndarray) -> float:
  """Two-sided Mann-Whitney U p-value (scipy's default method choice); NaN if untestable.

  scipy returns NaN, with a warning, when every value in both samples is tied; that
  is reported as NaN rather than as a p-value.
  """
  if len(x) == 0 or len(y) == 0:
    return math.nan
  if np.all(x == x[0]) and np.all(y == x[0]):
    return math.nan
  return float(scipy.stats.mannwhitneyu(x, y, alternative="two-sided").pvalue)


def _bounds(
  kind: str, bound_runs: Sequence[RunResult], by_method: dict[str, list[RunResult]]
) -> dict[str, Cell]:
  """Bound runs' round-0 per-case Dice, pooled over seeds, shown on every method's row.

  Without bound runs, a method's own runs may carry the bound as one number
  (`summary["lower_bound"]`); then the cell holds those numbers (one per seed).
  """
  rounds = [rr for run in bound_runs if run.bound == kind for rr in run.rounds if rr.round == 0]
  if rounds:
    shared = _cell(rounds)
    return {m: shared for m in by_method}
  out = {}
  for m, runs in by_method.items():
    v = np.array([getattr(r, kind) for r in runs if getattr(r, kind) is not None])
    v = v[~np.isnan(v)]
    if len(v):
      out[m] = Cell(values=v, seed_means=v, n_nan=0)
  return out


def summarize(runs: Sequence[RunResult], reference: str = "ASSFT") -> Summary:
  """Pools `runs` by (method, round) and tests every method against `reference`.

  Bound runs (strategy lower_bound/upper_bound) give the bound columns, not rows.
  """
  bound_runs = [r for r in runs if r.bound]
  runs = [r for r in runs if not r.bound]
  methods = sorted({r.method for r in runs}, key=lambda m: method_sort_key(m, reference))
  budgets = _budgets(runs)
  by_method = {m: [r for r in runs if r.method == m] for m in methods}
  cells, class_cells, classes = {}, {}, []
  for m, mruns in by_method.items():
    for b in budgets:
      rounds = [rr for run in mruns for rr in run.rounds if rr.round == b.round]
      if not rounds:
        continue
      cells[(m, b.round)] = _cell(rounds)
      for rr in rounds:
        for c in rr.dice_per_class:
          if c not in classes:
            classes.append(c)
      for c in classes:
        vals = [rr.dice_per_class[c] for rr in rounds if c in rr.dice_per_class]
        vals = np.array([v for v in vals if not math.isnan(v)])
        if len(vals):
          class_cells[(m, b.round, c)] = ClassCell(vals)
  ref = reference if reference in methods else None
  pvalues = {}
  if ref is not None:
    for (m, r), cell in cells.items():
      if m != ref and (ref, r) in cells:
        pvalues[(m, r)] = mann_whitney_p(cell.values, cells[(ref, r)].values)
  return Summary(
    methods=methods,
    budgets=budgets,
    cells=cells,
    pvalues=pvalues,
    reference=ref,
    classes=classes,
    class_cells=class_cells,
    lower=_bounds("lower_bound", bound_runs, by_method),
    upper=_bounds("upper_bound", bound_runs, by_method),
    seeds={m: sorted(r.seed for r in rs) for m, rs in by_method.items()},
    incomplete=[r for r in runs + bound_runs if not r.complete],
    bound_runs=bound_runs,
  )


def ranks(values: dict[str, float], decimals: int = 2) -> dict[str, int]:
  """1 for the best, 2 for the second best, 0 otherwise; on Dice x 100 as displayed.

  Ranks are dense over the rounded values, so methods tied at the shown precision
  share the bold (or the underline); when all are tied nobody is marked.
  """
  shown = {k: round(100.0 * v, decimals) for k, v in values.items() if not math.isnan(v)}
  distinct = sorted(set(shown.values()), reverse=True)
  if len(distinct) == 1 and len(shown) > 1:  # all tied: nothing stands out
    return {k: 0 for k in shown}
  top = {v: i + 1 for i, v in enumerate(distinct[:2])}
  return {k: top.get(v, 0) for k, v in shown.items()}


def reference_significant(summary: Summary, r: int) -> bool:
  """The paper's star on ASSFT: p < 0.01 against every other method at round r."""
  ps = [p for (m, rr), p in summary.pvalues.items() if rr == r]
  return bool(ps) and all(not math.isnan(p) and p < SIGNIFICANCE for p in ps)
