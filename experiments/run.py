"""Runs one active-learning experiment (Algorithm 1), resumable.

  python -m experiments.run --flagfile=experiments/flags/smoke.flags --workdir=/tmp/smoke

Exit codes: 0 done; 1 a clear error (bad flag, bad data, ...); 3 waiting for annotators
(--oracle=manifest): label the cases listed in round_XXX/to_annotate.csv and rerun.
"""
from __future__ import annotations

import logging
import sys

from absl import app, flags

from assft_jax import errors, flags as run_flags

run_flags.define_flags()
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.getLogger("assft_jax").setLevel(logging.INFO)
  with errors.cli_errors():
    cfg = run_flags.config_from_flags(FLAGS)
    from assft_jax import loop  # after flag parsing: keeps `--help` fast
    summary = loop.run(cfg, overwrite=FLAGS.overwrite)
    last = summary["rounds"][-1]
    print(f"done: {cfg.workdir}/summary.json  ({summary['strategy']}, "
          f"{len(summary['rounds'])} round(s), last Dice {last['dice_mean']})")


if __name__ == "__main__":
  app.run(main)
