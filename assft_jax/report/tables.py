"""The paper's tables (methods x budgets, Dice x 100 as "mean +- SD") as Markdown and CSV.

Markdown marks the best mean of a column in **bold** and the second best with <u>...</u>
(the paper's Tables 1-5). A "*" follows a method's mean when its Mann-Whitney U test
against the reference gives p < 0.01; the reference itself gets the "*" when it differs
at p < 0.01 from every other method in that column (the paper's convention).
"""

from __future__ import annotations

import csv
import io
import math

from assft_jax.report.stats import SIGNIFICANCE, Budget, Summary, ranks, reference_significant

LOWER_HEADER = "Lower Bound 0%"
UPPER_HEADER = "Upper Bound 100%"


def pct(v: float) -> str:
  return "n/a" if v is None or math.isnan(v) else f"{100.0 * v:.2f}"


def fmt_p(p: float | None) -> str:
  if p is None:
    return ""
  return "n/a" if math.isnan(p) else f"{p:.2e}"


def _star(s: Summary, m: str, r: int) -> bool:
  if s.reference is None:
    return False
  if m == s.reference:
    return reference_significant(s, r)
  p = s.pvalues.get((m, r), math.nan)
  return not math.isnan(p) and p < SIGNIFICANCE


def _decorate(mean: str, rank: int, star: bool, markdown: bool) -> str:
  if not markdown:
    return mean + ("*" if star else "")
  mean += "\\*" if star else ""
  if rank == 1:
    return f"**{mean}**"
  if rank == 2:
    return f"<u>{mean}</u>"
  return mean


def _bound_text(c) -> str:
  return "" if c is None or not len(c.values) else f"{pct(c.mean)} ± {pct(c.sd)}"


def _column_ranks(s: Summary, b: Budget) -> dict[str, int]:
  return ranks({m: s.cells[(m, b.round)].mean for m in s.methods if (m, b.round) in s.cells})


def main_rows(s: Summary, budgets: list[Budget], markdown: bool) -> list[list[str]]:
  """Header row + one row per method; cells "mean +- SD" (pooled per-case Dice x 100)."""
  has_lo, has_up = bool(s.lower), bool(s.upper)
  header = (
    ["Methods"]
    + ([LOWER_HEADER] if has_lo else [])
    + [b.header for b in budgets]
    + ([UPPER_HEADER] if has_up else [])
  )
  col_ranks = {b.round: _column_ranks(s, b) for b in budgets}
  rows = [header]
  for m in s.methods:
    row = [m] + ([_bound_text(s.lower.get(m))] if has_lo else [])
    for b in budgets:
      c = s.cells.get((m, b.round))
      if c is None or not len(c.values):
        row.append("")
        continue
      mean = _decorate(pct(c.mean), col_ranks[b.round].get(m, 0), _star(s, m, b.round), markdown)
      row.append(f"{mean} ± {pct(c.sd)}")
    row += [_bound_text(s.upper.get(m))] if has_up else []
    rows.append(row)
  return rows


def seed_rows(s: Summary, budgets: list[Budget]) -> list[list[str]]:
  """Mean +- SD over the seeds' mean Dice (x 100), with the seed count."""
  rows = [["Methods", "Seeds"] + [b.header for b in budgets]]
  for m in s.methods:
    row = [m, str(len(s.seeds[m]))]
    for b in budgets:
      c = s.cells.get((m, b.round))
      row.append(
        "" if c is None or not len(c.seed_means) else f"{pct(c.seed_mean)} ± {pct(c.seed_sd)}"
      )
    rows.append(row)
  return rows


def pvalue_rows(s: Summary, budgets: list[Budget]) -> list[list[str]]:
  rows = [["Methods"] + [b.header for b in budgets]]
  for m in s.methods:
    cells = [
      "reference" if m == s.reference else fmt_p(s.pvalues.get((m, b.round))) for b in budgets
    ]
    rows.append([m] + cells)
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
      row.append(
        ""
        if cc is None
        else f"{_decorate(pct(cc.mean), rk[c].get(m, 0), False, markdown)} ± {pct(cc.sd)}"
      )
    rows.append(row)
  return rows


def markdown_table(rows: list[list[str]]) -> str:
  head, body = rows[0], rows[1:]
  lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
  lines += ["| " + " | ".join(r) + " |" for r in body]
  return "\n".join(lines) + "\n"


def csv_text(rows: list[list[str]]) -> str:
  buf = io.StringIO()
  csv.writer(buf, lineterminator="\n").writerows(rows)
  return buf.getvalue()


def long_rows(s: Summary) -> list[list[str]]:
  """Machine-readable: one row per method x round (r = 0 included), numbers unrounded."""
  rows = [
    [
      "method",
      "round",
      "budget",
      "n_labeled",
      "n_values",
      "n_seeds",
      "n_nan",
      "dice_mean_pct",
      "dice_sd_pct",
      "seed_mean_pct",
      "seed_sd_pct",
      f"p_vs_{s.reference or 'reference'}",
      "rank",
    ]
  ]
  for b in s.budgets:
    rk = _column_ranks(s, b)
    for m in s.methods:
      c = s.cells.get((m, b.round))
      if c is None:
        continue
      p = s.pvalues.get((m, b.round))
      rows.append(
        [
          m,
          str(b.round),
          b.label,
          str(b.n_labeled),
          str(len(c.values)),
          str(len(c.seed_means)),
          str(c.n_nan),
          repr(100 * c.mean),
          repr(100 * c.sd),
          repr(100 * c.seed_mean),
          repr(100 * c.seed_sd),
          "" if p is None else repr(p),
          str(rk.get(m, 0)),
        ]
      )
  return rows


def class_long_rows(s: Summary) -> list[list[str]]:
  rows = [["method", "round", "budget", "class", "n_seeds", "dice_mean_pct", "dice_sd_pct"]]
  for b in s.budgets:
    for m in s.methods:
      for c in s.classes:
        cc = s.class_cells.get((m, b.round, c))
        if cc is not None:
          rows.append(
            [
              m,
              str(b.round),
              b.label,
              c,
              str(len(cc.values)),
              repr(100 * cc.mean),
              repr(100 * cc.sd),
            ]
          )
  return rows
