"""How the report prints numbers and tables (Dice x 100, p-values, Markdown, CSV)."""

from __future__ import annotations

import csv
import io
import math

DASH = "–"  # an SD over a single value: undefined, never "± 0.00"


def pct(v: float | None) -> str:
  """A Dice fraction as Dice x 100 with two decimals; "n/a" when missing."""
  return "n/a" if v is None or math.isnan(v) else f"{100.0 * v:.2f}"


def sd_text(v: float) -> str:
  """An SD as Dice x 100; "–" when undefined (NaN: fewer than two values)."""
  return DASH if math.isnan(v) else f"{100.0 * v:.2f}"


def mean_sd(mean: float, sd: float) -> str:
  return f"{pct(mean)} ± {sd_text(sd)}"


def fmt_p(p: float | None) -> str:
  if p is None:
    return ""
  return "n/a" if math.isnan(p) else f"{p:.2e}"


def num(v: float | None, scale: float = 1.0) -> str:
  """An unrounded number for the long CSVs; empty when missing or undefined."""
  return "" if v is None or math.isnan(v) else repr(scale * float(v))


def markdown_table(rows: list[list[str]]) -> str:
  head, body = rows[0], rows[1:]
  lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
  lines += ["| " + " | ".join(r) + " |" for r in body]
  return "\n".join(lines) + "\n"


def csv_text(rows: list[list[str]]) -> str:
  buf = io.StringIO()
  csv.writer(buf, lineterminator="\n").writerows(rows)
  return buf.getvalue()
