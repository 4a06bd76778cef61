"""Writes the paper-style report of a sweep directory (or of one run's workdir).

  python -m experiments.report DIR [--reference=ASSFT] [--include_init] [--power=PATH]
      [--groups=dataset.json] [--group_by=FIELD,...]

Reads every DIR/**/summary.json (with its config.json, and round_XXX/query_slices.npz)
and writes into DIR the files of `assft_jax.report.OUTPUTS`: report.md (the benchmark's
power from --power or DIR/power/power.json, written by experiments.power; one section per
per-round budget: Table 1 with seeds as replicates and its per-case pooled form, the
controls, nnActive's AUBC and pairwise penalty matrices, Tables 6-8), the CSVs behind it
(report.csv, report_pooled.csv, report_long.csv, report_per_class.csv, report_aubc.csv,
report_ppm.csv, report_pseudo.csv) and the figures (dice_vs_budget.png, ppm.png,
pseudo_dice.png, queries.png; the last three when they have content). With strata
(--stratify_by or --group_by) it also shows what each method queried by stratum. Exit
code 1 with one line on stderr on bad input.
"""

from __future__ import annotations

from absl import app, flags

from assft_jax import errors

flags.DEFINE_string(
  "reference",
  "ASSFT",
  "Method every other is tested against (display name, e.g. ASSFT or DKD+ASD).",
)
flags.DEFINE_bool("include_init", False, "Also show round 0 (the one-shot init) as a table column.")
flags.DEFINE_string(
  "power",
  None,
  "The benchmark's power.json (from experiments.power); default: DIR/power/power.json if "
  "it exists, else the report says the power was not measured.",
)
flags.DEFINE_string(
  "groups",
  None,
  "A dataset.json whose 'cases' table gives each case's strata (e.g. scanner, site), for "
  "the table of what each method queried by stratum; default: the runs' "
  "--data_dir/dataset.json. A phantom's lives in the cache: "
  "CACHE_DIR/phantom_<...>/dataset.json.",
)
flags.DEFINE_list(
  "group_by", None, "The 'cases' fields to group by; default: the runs' --stratify_by."
)
flags.DEFINE_list(
  "arms",
  None,
  "Only the runs of these sweep arms (the folders below DIR, e.g. random,entropy,dkd); "
  "default: every run below DIR.",
)
flags.DEFINE_string("out", None, "Where the report's files go; default: DIR.")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("usage: python -m experiments.report DIR")
  with errors.cli_errors():
    from assft_jax.report import write_report  # after parsing: keeps --help fast

    written = write_report(
      argv[1],
      reference=FLAGS.reference,
      include_init=FLAGS.include_init,
      power=FLAGS.power,
      groups=FLAGS.groups,
      group_by=FLAGS.group_by,
      arms=FLAGS.arms,
      out=FLAGS.out,
    )
    for path in written.values():
      print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main)
