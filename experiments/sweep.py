"""Runs a grid of strategies x seeds, each cell its own resumable `experiments.run` run.

  python -m experiments.sweep --flagfile=experiments/flags/demo.flags
      --strategies=assft,rand,dkd_asd+sup,random+ssft --seeds=0-4 --out=/tmp/sweep
      [--jobs=2] [--platform=auto|cpu|gpu|tpu] [--devices_per_cell=1] [--epochs_round=2 ...]

Cell workdirs are OUT/<token>/seed_<k>/ (`<name>+ssft`: with SSFT, `<name>+sup`: the
compute-matched control). Cells whose summary.json says complete are skipped; the
others are (re)started, which resumes them. --jobs=N runs N cells at once, with its
output in <cell workdir>/run.log; on CPUs each is pinned to cores // N CPUs, on GPUs or
TPU chips each gets --devices_per_cell devices of its own (cells beyond the device groups
share them, with their memory split); Ctrl-C stops them all. Flags this script does not know
are passed to every run (after --strategy/--seed/--workdir, so they win). A failing cell
does not stop the sweep. Exit code: 1 if any cell failed (they are listed), else 3 if any
cell waits for human labels (--oracle=manifest), else 0. Then the report is written
(--noreport to skip).
"""

from __future__ import annotations

import sys

from absl import app, flags

from assft_jax import errors

flags.DEFINE_string("strategies", None, "Comma-separated strategy names, e.g. assft,rand.")
flags.DEFINE_string("seeds", "0", "Comma-separated seeds or ranges, e.g. 0,1,2 or 0-4.")
flags.DEFINE_string("out", None, "Sweep directory; one workdir per cell below it.")
flags.DEFINE_integer(
  "jobs",
  0,
  "Cells run at once (log: <cell>/run.log). On CPUs each gets its share of the cores; "
  "on accelerators its devices (--devices_per_cell). 0: 1 on CPUs, one per device group "
  "on accelerators.",
)
flags.DEFINE_enum(
  "platform",
  "auto",
  ["auto", "cpu", "gpu", "tpu"],
  "Where the cells run; auto: GPUs when nvidia-smi lists some, else TPU chips when "
  "/dev/accel* exist, else the CPUs.",
)
flags.DEFINE_integer(
  "runs_per_program",
  0,
  "Cells whose runs train as one program (experiments.group): up to this many with the "
  "same round structure share a process and a jitted step. 0: the platform's default "
  "(RUNS_PER_PROGRAM: 1 on CPUs, where it was measured not to pay, 8 on accelerators).",
)
flags.DEFINE_integer(
  "devices_per_cell",
  1,
  "Accelerators each cell gets (consecutive ids, CUDA_VISIBLE_DEVICES / "
  "TPU_VISIBLE_CHIPS). More cells than device groups share them round-robin, with no "
  "memory preallocation and an equal part of 90 % of a device's memory each.",
)
flags.DEFINE_bool("report", True, "Write the report into --out after the sweep.")
flags.mark_flags_as_required(["strategies", "out"])
FLAGS = flags.FLAGS


def parse_argv(argv: list[str]) -> tuple[list[str], list[str]]:
  """Takes --flagfile out, parses this script's flags, and returns (flagfiles,
  pass-through args)."""
  from assft_jax.sweep import split_flagfiles

  flagfiles, rest = split_flagfiles(argv)
  try:
    remaining = FLAGS(rest, known_only=True)
  except flags.Error as e:  # what app.run's own parser would print, without a traceback
    print(
      f"error: {e}\nusage: python -m experiments.sweep --flagfile=F "
      "--strategies=a,b --seeds=0,1 --out=DIR [run flags ...]",
      file=sys.stderr,
    )
    raise SystemExit(1) from None
  return flagfiles, [a for a in remaining[1:] if a != "--"]


# The runs per program by platform when --runs_per_program is 0 (PERFORMANCE.md has the
# CPU measurement behind its value).
RUNS_PER_PROGRAM = {"cpu": 1, "gpu": 8, "tpu": 8}


def _placement() -> tuple[int, list[dict] | None, int]:
  """(processes at once, each slot's device environment or None for CPU pinning, runs per
  program)."""
  from assft_jax import sweep

  platform = FLAGS.platform
  if platform == "auto":
    platform = next((p for p in ("gpu", "tpu") if sweep.visible_devices(p)), "cpu")
  k = FLAGS.runs_per_program or RUNS_PER_PROGRAM[platform]
  if platform == "cpu":
    return FLAGS.jobs or 1, None, k
  devices = sweep.visible_devices(platform)
  if not devices:
    raise sweep.SweepError(f"--platform={platform}: no {platform} device is visible")
  jobs = FLAGS.jobs or max(1, len(devices) // FLAGS.devices_per_cell)
  envs = sweep.device_slots(devices, jobs, FLAGS.devices_per_cell, platform)
  print(f"sweep: {jobs} process(es) of up to {k} runs on {len(devices)} {platform} device(s)")
  return jobs, envs, k


def main(args):
  flagfiles, extra = args
  from assft_jax import sweep

  with errors.cli_errors():
    cells = sweep.plan_cells(
      sweep.parse_strategies(FLAGS.strategies), sweep.parse_seeds(FLAGS.seeds), FLAGS.out
    )
    sweep.check_plans(cells, flagfiles, extra)  # a run that cannot work stops the sweep here
    jobs, envs, k = _placement()
    try:
      result = sweep.run_sweep(cells, flagfiles, extra, jobs=jobs, envs=envs, runs_per_program=k)
    except KeyboardInterrupt:
      print("sweep interrupted; rerun the same command to resume", file=sys.stderr)
      raise SystemExit(130) from None
    if FLAGS.report:
      from assft_jax.report import ReportError, write_report

      try:
        for path in write_report(FLAGS.out).values():
          print(f"wrote {path}")
      except ReportError as e:
        print(f"no report: {e}")
  raise SystemExit(result.exit_code)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_argv)
