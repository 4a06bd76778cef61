"""Writes the paper-style report of a sweep directory (or of one run's workdir).

  python -m experiments.report DIR [--reference=ASSFT] [--include_init]

Reads every DIR/**/summary.json (and round_XXX/query_slices.npz) and writes into DIR:
report.md, report.csv (the paper's table form), report_long.csv, report_per_class.csv,
dice_vs_budget.png and queries.png. Exit code 1 with one line on stderr on bad input.
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
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("usage: python -m experiments.report DIR")
  with errors.cli_errors():
    from assft_jax.report import write_report  # after parsing: keeps --help fast

    written = write_report(argv[1], reference=FLAGS.reference, include_init=FLAGS.include_init)
    for path in written.values():
      print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main)
