"""Runs several cells in one process, their training stages as one program.

  python -m experiments.group --flagfile=experiments/flags/benchmark.flags \
      --cell=random:0:runs/benchmark/random/seed_0 --cell=random:1:runs/benchmark/random/seed_1 \
      [--batched=auto|map|vmap] [any experiments.run flag ...]

Each --cell is TOKEN:SEED:WORKDIR, as `experiments.sweep --runs_per_program=K` writes them
(a token as the sweep's --strategies: random, assft, random+ssft, dkd_asd+sup, ...). Every
cell is its own resumable run (`experiments.run` with the same flags would make it), in its
own thread; their training stages that share a schedule run together
(`assft_jax/group.py`). Rerunning the same command resumes every cell.

Exit code: 0 when every cell is complete, 3 when one waits for annotators and none
failed, 1 when one failed (each failure is listed, one line per cell).
"""

from __future__ import annotations

import sys
import traceback

from absl import app, flags

from assft_jax import errors

flags.DEFINE_multi_string("cell", [], "A cell, TOKEN:SEED:WORKDIR (repeat the flag).")
flags.DEFINE_enum(
  "batched",
  "auto",
  ["auto", "loop", "vmap"],
  "How the runs share the device: loop applies each run's own step in turn (each run "
  "exactly as alone), vmap vectorises them into one jitted step; auto: loop on a CPU, "
  "vmap on an accelerator.",
)
FLAGS = flags.FLAGS


def parse_argv(argv: list[str]) -> tuple[list[str], list[str]]:
  """Takes --flagfile out (it belongs to the runs), parses this script's flags, and
  returns (flagfiles, pass-through run flags)."""
  from assft_jax.sweep import split_flagfiles

  flagfiles, rest = split_flagfiles(argv)
  try:
    remaining = FLAGS(rest, known_only=True)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(1) from None
  return flagfiles, [a for a in remaining[1:] if a != "--"]


def main(args):
  flagfiles, extra = args
  from assft_jax import flags as run_flags
  from assft_jax import group, loop, sweep
  from assft_jax.errors import EXIT_ERROR, EXIT_OK, EXIT_PENDING, AssftError
  from assft_jax.process import enable_compilation_cache, quiet_libraries

  quiet_libraries()
  with errors.cli_errors():
    if not FLAGS.cell:
      raise sweep.SweepError("--cell: give at least one TOKEN:SEED:WORKDIR")
    sweep.check_extra(extra)
    cells = [sweep.parse_cell_spec(text) for text in FLAGS.cell]
    cfgs = []
    for c in cells:
      argv = [f"--flagfile={f}" for f in flagfiles] + sweep.cell_flags(c) + list(extra)
      cfgs.append(run_flags.parse(argv))
    enable_compilation_cache(cfgs[0])
    batched = None if FLAGS.batched == "auto" else FLAGS.batched
    results = group.run_group(cfgs, lambda cfg, b: loop.run(cfg, batcher=b), batched)
  codes = []
  for c, r in zip(cells, results):
    if isinstance(r, BaseException):
      code = r.exit_code if isinstance(r, AssftError) else EXIT_ERROR
      if not isinstance(r, AssftError):  # a bug keeps its traceback
        traceback.print_exception(r)
      print(f"{c.name}: {'error' if code != EXIT_PENDING else 'waiting'}: {r}", file=sys.stderr)
      codes.append(code)
    else:
      print(f"{c.name}: done ({c.workdir}/summary.json)")
      codes.append(EXIT_OK)
  if any(k not in (EXIT_OK, EXIT_PENDING) for k in codes):
    raise SystemExit(EXIT_ERROR)
  raise SystemExit(EXIT_PENDING if EXIT_PENDING in codes else EXIT_OK)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_argv)
