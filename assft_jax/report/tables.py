"""The paper's Table 1 form (methods x budgets, Dice x 100 as "mean +- SD") as Markdown
and CSV, in two forms: seeds as replicates (the main table) and per case pooled.

Markdown marks the best mean of a column in **bold** and the second best with <u>...</u>
(the paper's Tables 1-5). A "*" follows a method's mean when its Mann-Whitney U test
against the reference gives p < 0.01; the reference itself gets the "*" when it differs
at p < 0.01 from every other method in that column (the paper's convention). The seed
form tests the seeds' mean Dice; the pooled form the pooled per-case Dice.
"""

from __future__ import annotations

import math

from assft_jax.report.fmt import fmt_p, mean_sd, num, pct, sd_text
from assft_jax.report.stats import SIGNIFICANCE, Budget, Summary, ranks, reference_significant

LOWER_HEADER = "Lower Bound 0%"
UPPER_HEADER = "Upper Bound 100%"


def _stat(c, seeds: bool) -> tuple[float, float]:
  return (c.seed_mean, c.seed_sd) if seeds else (c.mean, c.sd)


def _pvalues(s: Summary, seeds: bool) -> dict[tuple[str, int], float]:
  return s.seed_pvalues if seeds else s.pvalues


def _star(s: Summary, m: str, r: int, seeds: bool) -> bool:
  if s.reference is None:
    return False
  if m == s.reference:
    return reference_significant(_pvalues(s, seeds), r)
  p = _pvalues(s, seeds).get((m, r), math.nan)
  return not math.isnan(p) and p < SIGNIFICANCE


def decorate(mean: str, rank: int, star: bool, markdown: bool) -> str:
  if not markdown:
    return mean + ("*" if star else "")
  mean += "\\*" if star else ""
  if rank == 1:
    return f"**{mean}**"
  if rank == 2:
    return f"<u>{mean}</u>"
  return mean


def _bound_text(c, seeds: bool) -> str:
  return "" if c is None or not len(c.values) else mean_sd(*_stat(c, seeds))


def column_ranks(s: Summary, r: int, seeds: bool) -> dict[str, int]:
  return ranks({m: _stat(s.cells[(m, r)], seeds)[0] for m in s.methods if (m, r) in s.cells})


def main_rows(s: Summary, budgets: list[Budget], markdown: bool, seeds: bool) -> list[list[str]]:
  """Header row + one row per method; cells "mean +- SD" (Dice x 100): over the seeds'
  means when `seeds`, else over the pooled per-case Dice."""
  has_lo, has_up = bool(s.lower), bool(s.upper)
  header = (
    ["Methods"]
    + ([LOWER_HEADER] if has_lo else [])
    + [b.header for b in budgets]
    + ([UPPER_HEADER] if has_up else [])
  )
  col_ranks = {b.round: column_ranks(s, b.round, seeds) for b in budgets}
  rows = [header]
  for m in s.methods:
    row = [m] + ([_bound_text(s.lower.get(m), seeds)] if has_lo else [])
    for b in budgets:
      c = s.cells.get((m, b.round))
      if c is None or not len(c.values):
        row.append("")
        continue
      mean, sd = _stat(c, seeds)
      rank, star = col_ranks[b.round].get(m, 0), _star(s, m, b.round, seeds)
      row.append(f"{decorate(pct(mean), rank, star, markdown)} ± {sd_text(sd)}")
    row += [_bound_text(s.upper.get(m), seeds)] if has_up else []
    rows.append(row)
  return rows


def seed_counts(s: Summary, m: str, budgets: list[Budget]) -> str:
  """How many of m's seeds reached each budget: "5", or "5/5/4" while runs are still
  going (a run's seed counts only at the budgets it has finished)."""
  n = [len(s.cells[(m, b.round)].seed_means) if (m, b.round) in s.cells else 0 for b in budgets]
  return str(n[0]) if len(set(n)) == 1 else "/".join(map(str, n))


def pvalue_rows(s: Summary, budgets: list[Budget], seeds: bool) -> list[list[str]]:
  pv = _pvalues(s, seeds)
  rows = [["Methods", "Seeds per budget"] + [b.header for b in budgets]]
  for m in s.methods:
    cells = ["reference" if m == s.reference else fmt_p(pv.get((m, b.round))) for b in budgets]
    rows.append([m, seed_counts(s, m, budgets)] + cells)
  return rows


def class_rows(s: Summary, b: Budget, markdown: bool) -> list[list[str]]:
  """Methods x classes at budget b: mean +- SD over seeds of each run's class Dice."""
  rows = [["Methods"] + list(s.classes)]
  rk = {
    c: ranks(
      {
        m: s.class_cells[(m, b.round, c)].mean
        for m in s.methods
        if (m, b.round, c) in s.class_cells
      }
    )
    for c in s.classes
  }
  for m in s.methods:
    row = [m]
    for c in s.classes:
      cc = s.class_cells.get((m, b.round, c))
      if cc is None:
        row.append("")
        continue
      mean = decorate(pct(cc.mean), rk[c].get(m, 0), False, markdown)
      row.append(f"{mean} ± {sd_text(cc.sd)}")
    rows.append(row)
  return rows


def with_budget_column(summaries: list[Summary], make) -> list[list[str]]:
  """One CSV over every budget: `make(s)` gives a section's rows (header first); each
  row is prefixed by its budget, and each budget keeps its own header row."""
  rows = []
  for s in summaries:
    part = make(s)
    rows += [["Budget", *part[0]]] + [[s.spec.title, *r] for r in part[1:]]
  return rows


def long_rows(summaries: list[Summary], reference: str) -> list[list[str]]:
  """Machine-readable: one row per budget x method x round (r = 0 included), numbers
  unrounded; an SD over a single value is empty."""
  rows = [
    [
      "budget",
      "budget_per_round",
      "method",
      "round",
      "label",
      "n_labeled",
      "n_values",
      "n_seeds",
      "n_nan",
      "dice_mean_pct",
      "dice_sd_pct",
      "seed_mean_pct",
      "seed_sd_pct",
      f"p_vs_{reference}_pooled",
      f"p_vs_{reference}_seeds",
      "rank_seeds",
    ]
  ]
  for s in summaries:
    for b in s.budgets:
      rk = column_ranks(s, b.round, seeds=True)
      for m in s.methods:
        c = s.cells.get((m, b.round))
        if c is None:
          continue
        rows.append(
          [
            s.spec.title,
            "" if s.spec.per_round is None else str(s.spec.per_round),
            m,
            str(b.round),
            b.label,
            str(b.n_labeled),
            str(len(c.values)),
            str(len(c.seed_means)),
            str(c.n_nan),
            num(c.mean, 100),
            num(c.sd, 100),
            num(c.seed_mean, 100),
            num(c.seed_sd, 100),
            num(s.pvalues.get((m, b.round))),
            num(s.seed_pvalues.get((m, b.round))),
            str(rk.get(m, 0)),
          ]
        )
  return rows


def class_long_rows(summaries: list[Summary]) -> list[list[str]]:
  rows = [
    ["budget", "method", "round", "label", "class", "n_seeds", "dice_mean_pct", "dice_sd_pct"]
  ]
  for s in summaries:
    for b in s.budgets:
      for m in s.methods:
        for c in s.classes:
          cc = s.class_cells.get((m, b.round, c))
          if cc is not None:
            rows.append(
              [
                s.spec.title,
                m,
                str(b.round),
                b.label,
                c,
                str(len(cc.values)),
                num(cc.mean, 100),
                num(cc.sd, 100),
              ]
            )
  return rows
