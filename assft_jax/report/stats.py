"""Pooling runs into (budget, method, round) cells, and the Mann-Whitney U tests.

Seeds are the independent replicates: a cell's seed-level statistic is the mean +- SD
over the seeds of each run's mean test Dice, and the significance claims of the main
table test those seed means. The per-case pooled form (every seed's per-case Dice
concatenated, n = test cases x seeds) is kept beside it, labelled as such: it is how
the paper computes its tables, and a description rather than a test.

Runs with different per-round budgets (`BudgetSpec`) never pool: `summarize` returns
one `Summary` per budget. Bound runs (no queries) serve every budget.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.stats

from assft_jax.report.collect import BudgetSpec, RoundResult, RunResult, method_sort_key

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
  """Sample SD (ddof=1); NaN for fewer than two values (printed "–")."""
  return float(np.std(x, ddof=1)) if len(x) > 1 else math.nan


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
  """One method at one round. `values`: [cases x seeds] pooled per-case Dice (no NaN)."""

  seeds: tuple[int, ...]  # [n_seeds] the runs' seeds, in the order of seed_means
  seed_means: np.ndarray  # [n_seeds] each run's mean over its cases
  n_nan: int  # per-case Dice dropped as NaN

  @property
  def seed_mean(self) -> float:
    return float(np.mean(self.seed_means)) if len(self.seed_means) else math.nan

  @property
  def seed_sd(self) -> float:
    return sd(self.seed_means)

  @property
  def by_seed(self) -> dict[int, float]:
    return dict(zip(self.seeds, self.seed_means.tolist()))


@dataclasses.dataclass(frozen=True)
class Summary:
  """Everything the tables and plots show for one budget. Dict keys: (method, round)."""

  spec: BudgetSpec
  methods: list[str]
  budgets: list[Budget]  # every round seen, r = 0 included
  cells: dict[tuple[str, int], Cell]
  seed_pvalues: dict[tuple[str, int], float]  # MWU of the seed means vs the reference
  pvalues: dict[tuple[str, int], float]  # MWU of the pooled per-case Dice vs the reference
  reference: str | None  # None when no reference runs exist at this budget
  classes: list[str]
  class_cells: dict[tuple[str, int, str], ClassCell]
  lower: dict[str, Cell]  # method -> its bound; the same Cell for every method
  upper: dict[str, Cell]  # when it comes from separate lower/upper-bound runs
  seeds: dict[str, list[int]]
  runs: list[RunResult]  # this budget's active-learning runs

  def table_budgets(self, include_init: bool = False) -> list[Budget]:
    return [b for b in self.budgets if include_init or b.round > 0]

  @property
  def last_round(self) -> int:
    return self.budgets[-1].round


def _budgets(runs: Sequence[RunResult]) -> list[Budget]:
  first: dict[int, Budget] = {}
  for run in runs:
    for rr in run.rounds:
      first.setdefault(rr.round, Budget(rr.round, rr.label, rr.n_labeled))
  return [first[r] for r in sorted(first)]


def _cell(rounds: Sequence[tuple[int, RoundResult]]) -> Cell:
  """rounds: (seed, round result) of one run each."""
  per_seed = [np.asarray(list(rr.dice_per_case.values()), dtype=np.float64) for _, rr in rounds]
  kept = [v[~np.isnan(v)] for v in per_seed]
  n_nan = sum(len(v) - len(k) for v, k in zip(per_seed, kept))
  values = np.concatenate(kept) if kept else np.zeros(0)
  with_cases = [(seed, k) for (seed, _), k in zip(rounds, kept) if len(k)]
  return Cell(
    values=values,
    seeds=tuple(seed for seed, _ in with_cases),
    seed_means=np.array([k.mean() for _, k in with_cases]),
    n_nan=n_nan,
  )


def mann_whitney_p(x: np.ndarray, y: np.ndarray) -> float:
  """Two-sided Mann-Whitney U p-value (scipy's default method choice); NaN if untestable.

  scipy returns NaN, with a warning, when every value in both samples is tied; that
  is reported as NaN rather than as a p-value.
  """
  x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
  if len(x) == 0 or len(y) == 0:
    return math.nan
  if np.all(x == x[0]) and np.all(y == x[0]):
    return math.nan
  return float(scipy.stats.mannwhitneyu(x, y, alternative="two-sided").pvalue)


def _bounds(kind: str, bound_runs: Sequence[RunResult], by_method: Mapping) -> dict[str, Cell]:
  """Bound runs' round-0 per-case Dice, one run per seed, shown on every method's row.

  Without bound runs, a method's own runs may carry the bound as one number
  (`summary["lower_bound"]`); then the cell holds those numbers (one per seed).
  """
  rounds = [
    (run.seed, rr) for run in bound_runs if run.bound == kind for rr in run.rounds if rr.round == 0
  ]
  if rounds:
    shared = _cell(rounds)
    return {m: shared for m in by_method}
  out = {}
  for m, runs in by_method.items():
    have = [(r.seed, getattr(r, kind)) for r in runs if getattr(r, kind) is not None]
    have = [(seed, v) for seed, v in have if not math.isnan(v)]
    if have:
      v = np.array([v for _, v in have])
      out[m] = Cell(values=v, seeds=tuple(s for s, _ in have), seed_means=v, n_nan=0)
  return out


def _classes(rounds: Sequence[RoundResult], classes: list[str], m: str, r: int, out: dict) -> None:
  for rr in rounds:
    for c in rr.dice_per_class:
      if c not in classes:
        classes.append(c)
  for c in classes:
    vals = [rr.dice_per_class[c] for rr in rounds if c in rr.dice_per_class]
    vals = np.array([v for v in vals if not math.isnan(v)])
    if len(vals):
      out[(m, r, c)] = ClassCell(vals)


def _summarize_budget(
  spec: BudgetSpec, runs: Sequence[RunResult], bound_runs: Sequence[RunResult], reference: str
) -> Summary:
  methods = sorted({r.method for r in runs}, key=lambda m: method_sort_key(m, reference))
  budgets = _budgets(runs)
  by_method = {m: [r for r in runs if r.method == m] for m in methods}
  cells, class_cells, classes = {}, {}, []
  for m, mruns in by_method.items():
    for b in budgets:
      rounds = [(run.seed, rr) for run in mruns for rr in run.rounds if rr.round == b.round]
      if rounds:
        cells[(m, b.round)] = _cell(rounds)
        _classes([rr for _, rr in rounds], classes, m, b.round, class_cells)
  ref = reference if reference in methods else None
  pvalues, seed_pvalues = {}, {}
  if ref is not None:
    for (m, r), cell in cells.items():
      if m != ref and (ref, r) in cells:
        pvalues[(m, r)] = mann_whitney_p(cell.values, cells[(ref, r)].values)
        seed_pvalues[(m, r)] = mann_whitney_p(cell.seed_means, cells[(ref, r)].seed_means)
  return Summary(
    spec=spec,
    methods=methods,
    budgets=budgets,
    cells=cells,
    seed_pvalues=seed_pvalues,
    pvalues=pvalues,
    reference=ref,
    classes=classes,
    class_cells=class_cells,
    lower=_bounds("lower_bound", bound_runs, by_method),
    upper=_bounds("upper_bound", bound_runs, by_method),
    seeds={m: sorted(r.seed for r in rs) for m, rs in by_method.items()},
    runs=list(runs),
  )


def summarize(runs: Sequence[RunResult], reference: str = "ASSFT") -> list[Summary]:
  """One Summary per per-round budget (in budget order), each pooling its runs by
  (method, round) and testing every method against `reference`.

  Bound runs (strategy lower_bound/upper_bound) give the bound columns, not rows.
  """
  bound_runs = [r for r in runs if r.bound]
  al_runs = [r for r in runs if not r.bound and r.rounds]
  specs = sorted({r.budget for r in al_runs}, key=lambda b: b.sort_key)
  return [
    _summarize_budget(spec, [r for r in al_runs if r.budget == spec], bound_runs, reference)
    for spec in specs
  ]


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


def reference_significant(pvalues: Mapping[tuple[str, int], float], r: int) -> bool:
  """The paper's star on ASSFT: p < 0.01 against every other method at round r."""
  ps = [p for (m, rr), p in pvalues.items() if rr == r]
  return bool(ps) and all(not math.isnan(p) and p < SIGNIFICANCE for p in ps)
