"""Measures the statistical power of a benchmark before strategies are compared.

  python -m experiments.power --flagfile=experiments/flags/benchmark.flags \
      --out=runs/benchmark/power [--set_size=K] [--steps=S] [--seeds=0-4]

Takes the run's flags (the data, model, training and --stratify_by settings of the
benchmark), trains a well-chosen and a poorly chosen labeled set of --set_size cases
from F(0) for --steps steps under each seed, and prints the training noise (SD over
seeds), the selection effect (the difference of mean test Dice) and their ratio. By
default the set is as large as a run's labeled set by its last round and the steps are
as many as such a run trains, so the measurement follows the flagfile. The
figures go to OUT/power.json, where `experiments.report` finds them (assft_jax/power.py
defines the sets). Each (set, seed) cell resumes.
"""

from __future__ import annotations

import logging
from pathlib import Path

from absl import app, flags

from assft_jax import config as config_lib
from assft_jax import errors
from assft_jax import flags as run_flags

run_flags.define_flags()
flags.DEFINE_string("out", None, "Output directory (one workdir per set and seed, power.json).")
flags.DEFINE_integer(
  "set_size", None, "Cases in each labeled set (default: a run's last-round size)."
)
flags.DEFINE_integer(
  "steps", None, "Optimiser steps per training (default: a run's steps by its end)."
)
flags.DEFINE_string("seeds", "0-4", "Training seeds, e.g. 0-4 or 0,1,2.")
flags.DEFINE_enum(
  "sets",
  "strata",
  ["strata", "minority", "similarity"],
  "How the well and poorly chosen sets are drawn: strata = every --stratify_by stratum in "
  "its share against the largest stratum only; minority = the same against the smallest "
  "stratum only; similarity = a set covering the pool in E(0) embedding space against "
  "the k mutually most similar cases.",
)
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.getLogger("assft_jax").setLevel(logging.INFO)
  with errors.cli_errors():
    if not FLAGS.out:
      raise config_lib.ConfigError("--out is required (where the measurement is written)")
    from assft_jax import power, sweep  # after flag parsing: keeps `--help` fast

    out = Path(FLAGS.out)
    cfg = run_flags.config_from_flags(FLAGS, default_workdir=str(out))
    seeds = sweep.parse_seeds(FLAGS.seeds)
    if len(seeds) < 2:
      raise config_lib.ConfigError(f"--seeds={FLAGS.seeds}: the noise SD needs two seeds or more")
    res = power.measure(cfg, out, seeds, k=FLAGS.set_size, steps=FLAGS.steps, rule=FLAGS.sets)
    for name in power.SETS:
      print(f"{name}: {100 * res['mean'][name]:.1f} ± {100 * res['sd'][name]:.1f} (Dice × 100)")
    print(
      f"training noise SD {100 * res['noise_sd']:.2f}, selection effect "
      f"{100 * res['effect']:.2f}, ratio {res['ratio']:.2f} (Welch p = {res['welch_p']:.3g})"
    )
    print(f"written to {out / 'power.json'}")


if __name__ == "__main__":
  app.run(main)
