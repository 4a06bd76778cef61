"""`write_report(DIR)`: the sweep's tables and figures, written atomically into DIR."""

from __future__ import annotations

import os
from pathlib import Path

from assft_jax import atomic
from assft_jax.config import BOUNDS
from assft_jax.report import plots, tables
from assft_jax.report.collect import ReportError, load_runs
from assft_jax.report.stats import SIGNIFICANCE, Summary, summarize

OUTPUTS = (
  "report.md",
  "report.csv",
  "report_long.csv",
  "report_per_class.csv",
  "dice_vs_budget.png",
  "queries.png",
)


def _runs_section(s: Summary, n_runs: int) -> list[str]:
  lines = ["## Runs", ""]
  for m in s.methods:
    lines.append(f"- {m}: seeds {', '.join(map(str, s.seeds[m]))}")
  for kind in BOUNDS:
    seeds = sorted(r.seed for r in s.bound_runs if r.bound == kind)
    if seeds:
      lines.append(f"- {kind.replace('_', ' ')} runs: seeds {', '.join(map(str, seeds))}")
  if s.incomplete:
    lines += [
      "",
      f"{len(s.incomplete)} of {n_runs} runs are not complete; their finished rounds are included:",
    ]
    lines += [
      f"- `{r.workdir}` ({r.method}, seed {r.seed}, {len(r.rounds)} rounds)" for r in s.incomplete
    ]
  dropped = sum(c.n_nan for c in s.cells.values())
  if dropped:
    lines += [
      "",
      f"{dropped} per-case Dice values were NaN (no foreground in ground truth "
      "or prediction) and were left out.",
    ]
  return lines


def _markdown(root: Path, s: Summary, n_runs: int, montage_note: str, include_init: bool) -> str:
  budgets = s.table_budgets(include_init)
  ref = s.reference
  out = [
    f"# Active-learning report: `{root}`",
    "",
    f"{n_runs} runs, {len(s.methods)} methods. Dice × 100, mean ± SD over the per-case "
    "Dice of the test cases of every seed pooled together (n = cases × seeds). "
    "**Bold**: best mean of the column; <u>underline</u>: second best.",
  ]
  if ref:
    out.append(
      f"\\*: p < {SIGNIFICANCE} in a two-sided Mann–Whitney U test of the method's "
      f"pooled per-case Dice against {ref}'s at the same budget; on {ref} itself, "
      "p < 0.01 against every other method (the paper's convention)."
    )
  else:
    out.append("No ASSFT runs found, so no significance tests are reported.")
  out += [
    "",
    "## Dice by method and budget",
    "",
    tables.markdown_table(tables.main_rows(s, budgets, markdown=True)),
    "## Seed-level Dice",
    "",
    "Mean ± SD over seeds of each run's mean test Dice (seeds are the independent replicates).",
    "",
    tables.markdown_table(tables.seed_rows(s, budgets)),
  ]
  if ref:
    out += [
      f"## Mann–Whitney U p-values against {ref}",
      "",
      "Two-sided, `scipy.stats.mannwhitneyu` on the pooled per-case Dice; n/a when "
      "every value is tied.",
      "",
      tables.markdown_table(tables.pvalue_rows(s, budgets)),
    ]
  if s.classes:
    out += [
      "## Per-class Dice",
      "",
      "Mean ± SD over seeds of each run's per-class Dice (x 100).",
      "",
    ]
    for b in budgets:
      out += [f"### {b.header}", "", tables.markdown_table(tables.class_rows(s, b, True))]
  out += ["## Figures", "", "![Dice vs budget](dice_vs_budget.png)", "", montage_note, ""]
  out += _runs_section(s, n_runs)
  return "\n".join(out) + "\n"


def write_report(
  root: str | os.PathLike, reference: str = "ASSFT", include_init: bool = False
) -> dict[str, Path]:
  """Reads every run below `root`, writes the report files into `root`.

  Returns {file name: path} of what was written (queries.png only when some run has
  query_slices.npz). Raises ReportError when root holds no runs or a summary is bad.
  include_init: also show round 0 (the one-shot init) as a table column.
  """
  root = Path(root)
  runs = load_runs(root)
  if all(r.bound for r in runs):
    raise ReportError(
      f"{root}: only lower/upper-bound runs found; no active-learning run to tabulate"
    )
  s = summarize(runs, reference)
  written = {}
  plots.plot_dice_vs_budget(s, root / "dice_vs_budget.png")
  written["dice_vs_budget.png"] = root / "dice_vs_budget.png"
  slices, problems = plots.collect_query_slices(runs)
  if slices:
    plots.plot_query_montage(slices, root / "queries.png")
    written["queries.png"] = root / "queries.png"
    note = "![Queried cases](queries.png)"
  else:
    note = "No readable `round_XXX/query_slices.npz` found: no montage of the queried cases."
  if problems:
    note += "\n\nSkipped montage inputs:\n" + "\n".join(f"- {p}" for p in problems)
  budgets = s.table_budgets(include_init)
  files = {
    "report.csv": tables.csv_text(tables.main_rows(s, budgets, markdown=False)),
    "report_long.csv": tables.csv_text(tables.long_rows(s)),
    "report_per_class.csv": tables.csv_text(tables.class_long_rows(s)),
    "report.md": _markdown(root, s, len(runs), note, include_init),
  }
  for name, text in files.items():
    atomic.write_text(root / name, text)
    written[name] = root / name
  return written
