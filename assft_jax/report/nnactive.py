"""nnActive's evaluation (Lüth et al., "nnActive", TMLR 2025) of one budget's runs.

- AUBC per (method, seed): the trapezoid of the run's mean test Dice over its L = R + 1
  evaluated rounds 0..R (r = 0 included), the round axis scaled to [0, 1]
  (dx = 1 / (L - 1)); complete runs only.
- Final Dice: round R, mean +- SD over seeds.
- Pairwise penalty matrix (PPM, after BADGE's paper): at each budget r = 1..R, a
  two-sided paired t-test across seeds (paired by seed; only seeds both methods have,
  at least 2) for every pair of methods. When i's mean is significantly higher than
  j's (p < alpha), 1/n_budgets is added to P[i, j]: row i counts i's wins, column j
  counts j's losses. A method's rank is its column's mean over the other methods
  (average losses, lower is better). The Holm variant tests each budget's pairs as
  one family (Holm's step-down).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from collections.abc import Sequence

import numpy as np
import scipy.stats

from assft_jax.report.fmt import markdown_table, num, pct, sd_text
from assft_jax.report.stats import Summary, ranks, sd
from assft_jax.report.tables import decorate

ALPHA = 0.05


def aubc(dice: Sequence[float]) -> float:
  """dice: [R + 1] a run's mean test Dice at rounds 0..R, R >= 1 -> the area under it
  with round r at x_r = r / R (trapezoid rule)."""
  y = np.asarray(dice, dtype=np.float64)
  if len(y) < 2:
    raise ValueError(f"AUBC needs at least rounds 0 and 1, got {len(y)} value(s)")
  return float(np.trapezoid(y, np.linspace(0.0, 1.0, len(y))))


def aubc_by_seed(s: Summary) -> dict[str, dict[int, float]]:
  """method -> {seed: AUBC} over rounds 0..R of this budget (R = its last round); a run
  that is not complete or lacks a round's Dice has none."""
  R = s.last_round
  out: dict[str, dict[int, float]] = {}
  if R < 1:
    return out
  for run in s.runs:
    by_round = {rr.round: rr.mean_dice for rr in run.rounds}
    curve = [by_round.get(r, math.nan) for r in range(R + 1)]
    if run.complete and not any(math.isnan(v) for v in curve):
      out.setdefault(run.method, {})[run.seed] = aubc(curve)
  return out


def holm_reject(pvalues: Sequence[float], alpha: float = ALPHA) -> np.ndarray:
  """[m] p-values -> [m] bool, Holm's step-down at family-wise level alpha: the k-th
  smallest p (k = 1..m) is rejected while every p up to it is below alpha / (m - k + 1)."""
  p = np.asarray(pvalues, dtype=np.float64)
  reject = np.zeros(len(p), dtype=bool)
  for k, i in enumerate(np.argsort(p, kind="stable")):
    if not p[i] < alpha / (len(p) - k):
      break
    reject[i] = True
  return reject


@dataclasses.dataclass(frozen=True)
class PairTest:
  """One paired t-test at round r: a vs b over their n common seeds."""

  round: int
  a: str
  b: str
  n: int
  mean_diff: float  # mean over seeds of a's Dice minus b's
  p: float
  holm: bool = False  # rejected by Holm over this round's tests

  @property
  def winner(self) -> str:
    """The method with the higher mean (the one credited when the test is significant)."""
    return self.a if self.mean_diff > 0 else self.b

  @property
  def loser(self) -> str:
    return self.b if self.mean_diff > 0 else self.a


def paired_p(x: np.ndarray, y: np.ndarray) -> float:
  """Two-sided paired t-test p; NaN when every paired difference is 0 (no test)."""
  with warnings.catch_warnings():  # near-equal pairs: scipy's precision-loss warning
    warnings.simplefilter("ignore", RuntimeWarning)
    return float(scipy.stats.ttest_rel(x, y).pvalue)


def paired_ci(x: np.ndarray, y: np.ndarray, level: float = 0.95) -> tuple[float, float]:
  """The two-sided t confidence interval of mean(x - y) over the pairs (n >= 2): whether
  it still holds a claimed effect size is what a reader can check against a paper."""
  with warnings.catch_warnings():  # near-equal pairs, as in paired_p
    warnings.simplefilter("ignore", RuntimeWarning)
    ci = scipy.stats.ttest_rel(x, y).confidence_interval(level)
  return float(ci.low), float(ci.high)


@dataclasses.dataclass(frozen=True)
class Penalties:
  """The PPM of one budget's runs; M = len(methods), in the report's row order."""

  methods: list[str]
  n_budgets: int
  raw: np.ndarray  # [M, M] P[i, j]: share of budgets where i is significantly above j
  holm: np.ndarray  # [M, M] the same, Holm-corrected per budget
  tested: np.ndarray  # [M, M] bool, symmetric: the pair shared >= 2 seeds at some budget
  tests: list[PairTest]

  def losses(self, holm: bool) -> np.ndarray:
    """[M] average losses: each column's mean over the other methods it was tested
    against (lower is better); NaN for a method tested against none."""
    mat = self.holm if holm else self.raw
    n = self.tested.sum(axis=0)
    # Untested pairs are left out, not counted as "no loss": a method with one seed
    # would otherwise rank first.
    total = np.where(self.tested, mat, 0.0).sum(axis=0)
    return np.where(n > 0, total / np.maximum(n, 1), math.nan)


def penalties(s: Summary, alpha: float = ALPHA) -> Penalties:
  rounds = [b.round for b in s.table_budgets()]
  idx = {m: i for i, m in enumerate(s.methods)}
  raw, holm = (np.zeros((len(s.methods), len(s.methods))) for _ in range(2))
  tested = np.zeros((len(s.methods), len(s.methods)), dtype=bool)
  tests: list[PairTest] = []
  for r in rounds:
    here = []
    for a, b in itertools.combinations(s.methods, 2):
      if (a, r) not in s.cells or (b, r) not in s.cells:
        continue
      xa, xb = s.cells[(a, r)].by_seed, s.cells[(b, r)].by_seed
      common = sorted(set(xa) & set(xb))
      if len(common) < 2:
        continue
      tested[idx[a], idx[b]] = tested[idx[b], idx[a]] = True
      x, y = np.array([xa[k] for k in common]), np.array([xb[k] for k in common])
      p = paired_p(x, y)
      if not math.isnan(p):  # every difference 0: equal, nothing to credit
        here.append(PairTest(r, a, b, len(common), float(np.mean(x - y)), p))
    for t, h in zip(here, holm_reject([t.p for t in here], alpha)):
      cell = (idx[t.winner], idx[t.loser])
      raw[cell] += (t.p < alpha) / len(rounds)
      holm[cell] += h / len(rounds)
      tests.append(dataclasses.replace(t, holm=bool(h)))
  return Penalties(list(s.methods), len(rounds), raw, holm, tested, tests)


def _share(v: float) -> str:
  return "n/a" if math.isnan(v) else f"{v:.2f}"


def ppm_rows(pen: Penalties, holm: bool) -> list[list[str]]:
  """Row i beats column j in cell (i, j); the last row: each column's average losses."""
  mat = pen.holm if holm else pen.raw
  rows = [["Row beats column", *pen.methods]]
  for i, m in enumerate(pen.methods):
    cells = [
      "" if i == j else _share(mat[i, j] if pen.tested[i, j] else math.nan)
      for j in range(len(pen.methods))
    ]
    rows.append([m, *cells])
  rows.append(["Average losses", *map(_share, pen.losses(holm))])
  return rows


def ranking_rows(pen: Penalties) -> list[list[str]]:
  """Methods by average losses (raw; ties share a rank), with the Holm variant beside."""
  raw, holm = pen.losses(False), pen.losses(True)
  order = sorted(range(len(pen.methods)), key=lambda i: (math.isnan(raw[i]), raw[i], holm[i], i))
  rows = [["Rank", "Methods", "Average losses", "Average losses (Holm)"]]
  for i in order:
    # Shares are multiples of 1 / (n_budgets x tested pairs): compare at 1e-9, not ==.
    rank = "–" if math.isnan(raw[i]) else str(1 + int(np.sum(raw < raw[i] - 1e-9)))
    rows.append([rank, pen.methods[i], _share(raw[i]), _share(holm[i])])
  return rows


def aubc_rows(s: Summary, by_seed: dict[str, dict[int, float]]) -> list[list[str]]:
  """Methods x (seeds, AUBC, final Dice): mean +- SD over seeds (x 100); best bold."""
  R = s.last_round
  aubcs = {m: np.array(list(v.values())) for m, v in by_seed.items()}
  finals = {m: s.cells[(m, R)] for m in s.methods if (m, R) in s.cells}
  rk_a = ranks({m: float(v.mean()) for m, v in aubcs.items()})
  rk_f = ranks({m: c.seed_mean for m, c in finals.items()})
  rows = [["Methods", "Seeds (AUBC)", "AUBC", f"Final Dice (r={R})"]]
  for m in s.methods:
    a, f = aubcs.get(m), finals.get(m)
    a_txt = (
      ""
      if a is None
      else f"{decorate(pct(a.mean()), rk_a.get(m, 0), False, True)} ± {sd_text(sd(a))}"
    )
    f_txt = (
      ""
      if f is None
      else f"{decorate(pct(f.seed_mean), rk_f.get(m, 0), False, True)} ± {sd_text(f.seed_sd)}"
    )
    rows.append([m, "0" if a is None else str(len(a)), a_txt, f_txt])
  return rows


def aubc_long_rows(summaries: list[Summary]) -> list[list[str]]:
  rows = [["budget", "method", "seed", "aubc_pct", "final_round", "final_dice_pct"]]
  for s in summaries:
    R = s.last_round
    for m, v in aubc_by_seed(s).items():
      final = s.cells[(m, R)].by_seed if (m, R) in s.cells else {}
      for seed in sorted(v):
        rows.append(
          [s.spec.title, m, str(seed), num(v[seed], 100), str(R), num(final.get(seed), 100)]
        )
  return rows


def pair_test_rows(summaries: list[Summary], pens: list[Penalties]) -> list[list[str]]:
  """Every paired t-test of the PPMs, one row each (pens[k] is summaries[k]'s); winner:
  the method credited with the win (the higher mean), when the test is significant."""
  rows = [
    ["budget", "round", "method_a", "method_b", "n_seeds", "mean_diff_pct", "p", "significant"]
    + ["holm_significant", "winner"]
  ]
  for s, pen in zip(summaries, pens):
    for t in pen.tests:
      sig = t.p < ALPHA
      rows.append(
        [s.spec.title, str(t.round), t.a, t.b, str(t.n), num(t.mean_diff, 100), repr(t.p)]
        + [str(sig), str(t.holm), t.winner if sig or t.holm else ""]
      )
  return rows


def markdown(s: Summary, pen: Penalties, ppm_figure: str | None) -> list[str]:
  """The section's lines; ppm_figure: the heatmap's file name, None when not drawn."""
  by_seed = aubc_by_seed(s)
  R = s.last_round
  out = ["### nnActive's evaluation", "", "#### AUBC and final Dice", ""]
  if by_seed:
    out += [
      f"AUBC: the trapezoid of each run's mean test Dice over its {R + 1} evaluated rounds "
      f"0..{R} (r = 0 included), the round axis scaled to [0, 1] (dx = 1/{R}); complete runs "
      "with every round only. AUBC and final Dice are Dice × 100, mean ± SD over seeds. "
      "**Bold**: best; <u>underline</u>: second.",
      "",
      markdown_table(aubc_rows(s, by_seed)),
    ]
  else:
    out += ["No complete run with rounds 0..R at this budget: no AUBC.", ""]
  if not pen.tested.any():
    return out + ["No pair of methods shares 2 seeds at any budget: no penalty matrix.", ""]
  intro = (
    f"Pairwise penalty matrix over {pen.n_budgets} budget(s) (r = 1..{R}): at each, a "
    "two-sided paired t-test (`scipy.stats.ttest_rel`, paired by seed, only the seeds both "
    f"methods have, at least 2) for every pair, α = {ALPHA}. Cell (row i, column j) grows "
    f"by 1/{pen.n_budgets} for each budget where i's mean Dice is significantly higher "
    "than j's: row i counts i's wins, column j counts j's losses. Average losses: a "
    "column's mean over the other methods (0 to 1; lower is better), the ranking below. "
    "n/a: the pair never shared 2 seeds at a budget; an average leaves such pairs out. "
    f"{len(pen.tests)} tests; see report_ppm.csv for each p."
  )
  out += ["#### Pairwise penalty matrix", "", intro, "", markdown_table(ppm_rows(pen, holm=False))]
  out += [
    "#### Pairwise penalty matrix, Holm-corrected",
    "",
    f"At each budget, Holm's step-down over the pairs tested there (family-wise α = {ALPHA}).",
    "",
    markdown_table(ppm_rows(pen, holm=True)),
    "#### Ranking by average losses",
    "",
    "Lower is better; ties share a rank; –: tested against no other method.",
    "",
    markdown_table(ranking_rows(pen)),
  ]
  if ppm_figure:
    out += [f"![Pairwise penalty matrices]({ppm_figure})", ""]
  return out
