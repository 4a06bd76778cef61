"""Runs one active-learning experiment (Algorithm 1), resumable.

  python -m experiments.run --flagfile=experiments/flags/smoke.flags --workdir=/tmp/smoke

Exit codes: 0 done; 1 a clear error (bad flag, bad data, a damaged workdir, a full
disk, a diverged training run, another run holding the workdir, ...); 3 waiting for
annotators (--oracle=manifest): label the cases listed in round_XXX/to_annotate.csv and
rerun. A killed run resumes with the same command; --resume_from=ROUND continues after
an earlier complete round (see --help).
"""

from __future__ import annotations

from absl import app, flags

from assft_jax import errors
from assft_jax import flags as run_flags
from assft_jax.process import enable_compilation_cache, quiet_libraries

run_flags.define_flags()
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  quiet_libraries()
  with errors.cli_errors():
    cfg = run_flags.config_from_flags(FLAGS)
    enable_compilation_cache(cfg)
    from assft_jax import loop  # after flag parsing: keeps `--help` fast

    summary = loop.run(
      cfg,
      overwrite=FLAGS.overwrite,
      resume_from=FLAGS.resume_from,
      allow_kernel_switch=FLAGS.allow_kernel_switch,
    )
    last = summary["rounds"][-1]
    print(
      f"done: {cfg.workdir}/summary.json  ({summary['strategy']}, "
      f"{len(summary['rounds'])} round(s), last Dice {last['dice_mean']}, "
      f"HD95 {last.get('hd95_mean')} mm, NSD {last.get('nsd_mean')} at "
      f"{cfg.eval.nsd_tolerance_mm:g} mm)"
    )


if __name__ == "__main__":
  app.run(main)
