"""`write_report(DIR)`: the sweep's tables and figures, written atomically into DIR.

report.md opens with the benchmark's power (report/power.py), then holds one section
per per-round budget (runs with different budgets never
pool): the paper's Table 1 form with seeds as replicates, its per-case pooled form, the
controls, nnActive's evaluation, Tables 6-8 where their runs exist, and per-class Dice.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from assft_jax import atomic
from assft_jax.config import BOUNDS
from assft_jax.report import ablation, nnactive, plots, pseudo, strata, surface, tables
from assft_jax.report import power as power_lib
from assft_jax.report import probe as probe_section
from assft_jax.report.collect import PROTOCOLS, ReportError, RunResult, load_runs, protocol_view
from assft_jax.report.fmt import csv_text, markdown_table
from assft_jax.report.stats import SIGNIFICANCE, Summary, summarize

# Every file the report may write; the optional figures only when they have content
# (a stale one from an earlier report is removed).
OUTPUTS = (
  "report.md",
  "report.csv",
  "report_pooled.csv",
  "report_long.csv",
  "report_per_class.csv",
  "report_aubc.csv",
  "report_ppm.csv",
  "report_pseudo.csv",
  "report_surface.csv",
  "report_protocols.csv",
  "dice_vs_budget.png",
  "ppm.png",
  "pseudo_dice.png",
  "queries.png",
)
OPTIONAL = ("ppm.png", "pseudo_dice.png", "queries.png")


def _runs_section(summaries: list[Summary], runs: list[RunResult]) -> list[str]:
  lines = ["## Runs", ""]
  for s in summaries:
    lines += [f"{s.spec.title}:", ""]
    lines += [f"- {m}: seeds {', '.join(map(str, s.seeds[m]))}" for m in s.methods]
    lines.append("")
  for kind in BOUNDS:
    seeds = sorted(r.seed for r in runs if r.bound == kind)
    if seeds:
      lines.append(f"- {kind.replace('_', ' ')} runs: seeds {', '.join(map(str, seeds))}")
  incomplete = [r for r in runs if not r.complete]
  if incomplete:
    lines += [
      "",
      f"{len(incomplete)} of {len(runs)} runs are not complete; their finished rounds are "
      "included (AUBC leaves them out):",
    ]
    lines += [
      f"- `{r.workdir}` ({r.method}, seed {r.seed}, {len(r.rounds)} rounds)" for r in incomplete
    ]
  lines += _kernel_lines(runs) + _lifted_lines(runs)
  dropped = sum(c.n_nan for s in summaries for c in s.cells.values())
  if dropped:
    lines += [
      "",
      f"{dropped} per-case Dice values were NaN (no foreground in ground truth "
      "or prediction) and were left out.",
    ]
  return lines


def _kernel_lines(runs: list[RunResult]) -> list[str]:
  """Which conv kernel made the rounds: kernels sum in another order, which moves single
  runs, so a comparison should hold one kernel (a report that mixes them says so)."""
  count: dict[str, int] = {}
  for r in runs:
    for x in r.rounds:
      key = x.conv_impl or "not recorded"
      count[key] = count.get(key, 0) + 1
  if not count:
    return []
  made = ", ".join(f"{k} ({n} rounds)" for k, n in sorted(count.items()))
  line = f"Conv kernel: {made}."
  if len(count) > 1:
    line += " The runs mix kernels: their float32 sums differ, which moves single runs."
  return ["", line]


def _lifted_lines(runs: list[RunResult]) -> list[str]:
  """The rounds whose query had §3.4's exclusion lifted (fewer than N_B queryable cases)."""
  where: dict[tuple[str, int], list[int]] = {}
  for r in runs:
    for x in r.rounds:
      if x.exclusion_lifted:
        where.setdefault((r.method, x.round), []).append(r.seed)
  if not where:
    return []
  items = [
    f"{m} round {k} (seeds {', '.join(map(str, sorted(seeds)))})"
    for (m, k), seeds in sorted(where.items())
  ]
  return [
    "",
    "§3.4's exclusion of the previous round's pseudo-labelled cases was lifted for the "
    "query of (fewer than N_B cases stayed queryable; DECISIONS.md): " + "; ".join(items) + ".",
  ]


def _table1(s: Summary, include_init: bool) -> list[str]:
  budgets, ref = s.table_budgets(include_init), s.reference
  n_ref = len(s.seeds[ref]) if ref else 0
  star = (
    f"\\*: p < {SIGNIFICANCE} in a two-sided Mann–Whitney U test of the method's seed means "
    f"against {ref}'s at the same budget; on {ref} itself, p < {SIGNIFICANCE} against every "
    f"other method (the paper's convention). With {n_ref} seeds on each side the smallest "
    f"attainable p is {2 / math.comb(2 * n_ref, n_ref):.2g}."
    if ref
    else "No ASSFT runs at this budget, so no significance tests are reported."
  )
  out = [
    "### Table 1 form: seeds as replicates",
    "",
    "Dice × 100, mean ± SD over seeds of each run's mean test Dice. **Bold**: best mean of "
    "the column; <u>underline</u>: second best. " + star,
    "",
    markdown_table(tables.main_rows(s, budgets, markdown=True, seeds=True)),
  ]
  if ref:
    out += [
      f"#### Mann–Whitney U p-values against {ref}, seeds as replicates",
      "",
      markdown_table(tables.pvalue_rows(s, budgets, seeds=True)),
    ]
  out += [
    "### Table 1 form, pooled per case",
    "",
    "Dice × 100, mean ± SD over the per-case Dice of every seed's test cases pooled "
    "together (n = cases × seeds), as the paper computes its tables. Cases of one seed "
    "share a model, so these are not independent replicates: a description, not a test."
    + (" \\*: as above, on the pooled per-case Dice." if ref else ""),
    "",
    markdown_table(tables.main_rows(s, budgets, markdown=True, seeds=False)),
  ]
  if ref:
    out += [
      f"#### Mann–Whitney U p-values against {ref}, pooled per case",
      "",
      "Two-sided, `scipy.stats.mannwhitneyu`; n/a when every value is tied.",
      "",
      markdown_table(tables.pvalue_rows(s, budgets, seeds=False)),
    ]
  return out


def _protocol_section(protocol: str, summaries: list[Summary], include_init: bool) -> list[str]:
  """Table 1 form and AUBC of one pool protocol ((b) or (c)), every budget."""
  out = [
    f"## Protocol ({protocol}): {PROTOCOLS[protocol]}",
    "",
    f"Every round's model scored on {PROTOCOLS[protocol]} instead of the held-out split, "
    "from the scoring pass it makes of the pool for the next round's query (the last "
    "round's model makes one for this alone). Dice × 100, mean ± SD over seeds of each "
    "run's mean Dice over those cases; cases without ground truth are left out and "
    "counted under Runs. The bound columns are F(0) and the network trained on the whole "
    "pool, scored on the same cases (an upper bound has no unlabeled case: –). "
    r"\* and the AUBC as in the held-out tables.",
    "",
  ]
  for s in summaries:
    out += [f"### {s.spec.title}", ""]
    out.append(markdown_table(tables.main_rows(s, s.table_budgets(include_init), True, True)))
    by_seed = nnactive.aubc_by_seed(s)
    if by_seed:
      out += ["AUBC and final Dice:", "", markdown_table(nnactive.aubc_rows(s, by_seed))]
  return out


def _protocol_rows(protocols: dict[str, list[Summary]], reference: str) -> list[list[str]]:
  """report_protocols.csv: report_long.csv's rows with the protocol in front."""
  rows: list[list[str]] = []
  for p, summaries in protocols.items():
    long = tables.long_rows(summaries, reference)
    if not rows:
      rows.append(["protocol", *long[0]])
    rows += [[p, *row] for row in long[1:]]
  return rows


def _section(s: Summary, pen, pseudo_cells, include_init, figures, pw, queried_by) -> list[str]:
  out = [f"## Budget: {s.spec.title}", ""] + power_lib.line(pw) + _table1(s, include_init)
  out += surface.markdown(s, s.table_budgets(include_init))
  aubcs = nnactive.aubc_by_seed(s)
  controls = ablation.control_rows(s, aubcs)
  if controls:
    out += [
      "### Controls",
      "",
      "Each pair's difference isolates one part of ASSFT. Δ: A − B, mean ± SD over the "
      "seeds both arms have (Dice × 100), its 95 % t confidence interval (a claimed "
      "effect outside it is unlikely on this benchmark; with few seeds it is wide), a "
      "two-sided paired t-test and the Mann–Whitney U test of the two arms' seed means.",
      "",
      markdown_table(controls),
    ]
  out += _queried_by(s, queried_by)
  out += nnactive.markdown(s, pen, "ppm.png" if "ppm.png" in figures else None)
  for title, table, contrasts, temperature in ablation.ABLATIONS:
    rows = ablation.ablation_rows(s, table, temperature)
    if rows:
      out += [
        f"### {title}",
        "",
        "Dice × 100, mean ± SD over seeds; p: two-sided Mann–Whitney U of the seed means "
        f"against {ablation.BASELINE}.",
        "",
        markdown_table(rows),
      ]
      pairs = ablation.contrast_rows(s, contrasts)
      if pairs:
        out += [
          "The table's own contrasts: difference of the seed means (Dice × 100) and the "
          "Mann–Whitney U p of the seed means.",
          "",
          markdown_table(pairs),
        ]
  if pseudo_cells:
    out += [
      "### Table 8 and Fig. 5: pseudo-label quality",
      "",
      "Stage-1 Dice × 100 (before stage 3) of the unlabeled cases with ground truth, the "
      "ones SSFT selected for pseudo-labels against the rest, pooled over seeds; "
      "p: two-sided Mann–Whitney U. The ground truth is used only for this measurement.",
      "",
      markdown_table(pseudo.rows(s, pseudo_cells)),
      "![Pseudo-label quality](pseudo_dice.png)",
      "",
    ]
  if s.classes:
    out += [
      "### Per-class Dice",
      "",
      "Mean ± SD over seeds of each run's per-class Dice (× 100).",
      "",
    ]
    for b in s.table_budgets(include_init):
      out += [f"#### {b.header}", "", markdown_table(tables.class_rows(s, b, True))]
  return out


def _markdown(
  root, summaries, runs, pens, pseudo_cells, note, include_init, figures, pw, queried_by, protocols
) -> str:
  methods = {m for s in summaries for m in s.methods}
  out = [
    f"# Active-learning report: `{root}`",
    "",
    f"{len(runs)} runs, {len(methods)} methods, {len(summaries)} per-round budget(s), each "
    "in its own section (runs with different budgets never pool). Dice × 100. Seeds are "
    "the independent replicates: the main table and every significance test use each "
    "run's mean test Dice; the per-case pooled form is given beside it. An SD over a "
    "single value prints –.",
    "",
  ] + power_lib.markdown(pw)
  controls = ablation.controls_present(methods)
  if controls:
    out += ["## What each comparison isolates", ""]
    out += [f"- **{a}** vs **{b}**: {what}." for a, b, what in controls]
    out.append("")
  for s, pen, cells in zip(summaries, pens, pseudo_cells):
    out += _section(s, pen, cells, include_init, figures, pw, queried_by)
  for p, ps in protocols.items():
    out += _protocol_section(p, ps, include_init)
  found = probe_section.find(root)
  if found is not None:
    out += probe_section.markdown(*found)
  out += ["## Figures", "", "![Dice vs budget](dice_vs_budget.png)", "", note, ""]
  out += _runs_section(summaries, runs)
  return "\n".join(out) + "\n"


def _queried_by(s: Summary, st: strata.Strata | None) -> list[str]:
  if st is None:
    return []
  head = [f"### What each method queried, by {', '.join(st.fields)}", ""]
  if st.group_of is None:
    return head + [
      f"No dataset.json with a 'cases' table was found for {', '.join(st.fields)} (the "
      "runs' --data_dir has none, e.g. a phantom in the cache): pass "
      "--groups=PATH/dataset.json.",
      "",
    ]
  rows = strata.rows(s, st)
  if rows is None:
    return []
  return head + [
    "Share (%) of each stratum among the cases a method queried in rounds 1.. (over all "
    "its seeds; round 0's shared init pick left out), beside the pool's own shares. "
    "A query that over-draws one domain shows it here.",
    "",
    markdown_table(rows),
  ]


def _pseudo_panels(summaries, pseudo_cells) -> list[tuple[str, dict]]:
  panels = []
  for s, cells in zip(summaries, pseudo_cells):
    for m in dict.fromkeys(m for m, _ in cells):
      by_round = {r: c for (mm, r), c in cells.items() if mm == m}
      panels.append((f"{m}, {s.spec.title}", by_round))
  return panels


def write_report(
  root: str | os.PathLike,
  reference: str = "ASSFT",
  include_init: bool = False,
  power: str | os.PathLike | None = None,
  groups: str | os.PathLike | None = None,
  group_by: list[str] | None = None,
  arms: list[str] | None = None,
  out: str | os.PathLike | None = None,
) -> dict[str, Path]:
  """Reads every run below `root`, writes the report files (`OUTPUTS`) into `root`.

  Returns {file name: path} of what was written; ppm.png, pseudo_dice.png and
  queries.png only when they have content. Raises ReportError when root holds no runs
  or a summary is bad. include_init: also show round 0 (the one-shot init) as a column.
  power: the benchmark's power.json (experiments.power); None looks for
  root/power/power.json, and without it the report says the power was not measured.
  groups / group_by: a dataset.json with a "cases" table and its fields, for the table of
  what each method queried by stratum; defaults: the runs' --data_dir/dataset.json and
  --stratify_by (report/strata.py). Without fields the table is left out.
  arms: only the runs of these sweep arms (the folders below root); out: where the files
  go (default root), e.g. a report of the ablation arms beside the main one.
  """
  root = Path(root)
  runs = load_runs(root, arms)
  dest = Path(out) if out is not None else root
  dest.mkdir(parents=True, exist_ok=True)
  pw = power_lib.find(root, power)
  summaries = summarize(runs, reference)
  if not summaries:
    raise ReportError(f"{root}: no active-learning run with a round found (only bound runs)")
  pens = [nnactive.penalties(s) for s in summaries]
  # The pool protocols, where the runs recorded their pool passes.
  protocols = {
    p: summarize(protocol_view(runs, p), reference)
    for p in ("b", "c")
    if any(x.pool_dice_per_case for r in runs for x in r.rounds)
  }
  pseudo_cells = [pseudo.pseudo_quality(s) for s in summaries]
  figures = {"dice_vs_budget.png"}
  plots.plot_dice_vs_budget(summaries, dest / "dice_vs_budget.png")
  with_tests = [(s, p) for s, p in zip(summaries, pens) if p.tested.any()]
  if with_tests:
    plots.plot_ppm([s for s, _ in with_tests], [p for _, p in with_tests], dest / "ppm.png")
    figures.add("ppm.png")
  panels = _pseudo_panels(summaries, pseudo_cells)
  if panels:
    plots.plot_pseudo_quality(panels, dest / "pseudo_dice.png")
    figures.add("pseudo_dice.png")
  slices, problems = plots.collect_query_slices(runs)
  if slices:
    plots.plot_query_montage(slices, dest / "queries.png")
    figures.add("queries.png")
    note = "![Queried cases](queries.png)"
  else:
    note = "No readable `round_XXX/query_slices.npz` found: no montage of the queried cases."
  if problems:
    note += "\n\nSkipped montage inputs:\n" + "\n".join(f"- {p}" for p in problems)
  budgets = lambda s: s.table_budgets(include_init)
  files = {
    "report.csv": tables.with_budget_column(
      summaries, lambda s: tables.main_rows(s, budgets(s), markdown=False, seeds=True)
    ),
    "report_pooled.csv": tables.with_budget_column(
      summaries, lambda s: tables.main_rows(s, budgets(s), markdown=False, seeds=False)
    ),
    "report_long.csv": tables.long_rows(summaries, reference),
    "report_per_class.csv": tables.class_long_rows(summaries),
    "report_aubc.csv": nnactive.aubc_long_rows(summaries),
    "report_ppm.csv": nnactive.pair_test_rows(summaries, pens),
    "report_pseudo.csv": pseudo.long_rows(summaries, pseudo_cells),
    "report_surface.csv": surface.long_rows(summaries),
    "report_protocols.csv": _protocol_rows(protocols, reference) if protocols else [],
  }
  written = {name: dest / name for name in figures}
  for name, rows in files.items():
    atomic.write_text(dest / name, csv_text(rows))
    written[name] = dest / name
  queried_by = strata.load(runs, groups, group_by)
  md = _markdown(
    root,
    summaries,
    runs,
    pens,
    pseudo_cells,
    note,
    include_init,
    figures,
    pw,
    queried_by,
    protocols,
  )
  atomic.write_text(dest / "report.md", md)
  written["report.md"] = dest / "report.md"
  for name in OPTIONAL:
    if name not in figures:
      (dest / name).unlink(missing_ok=True)
  return written
