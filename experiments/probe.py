"""Measures what each query score ranks: the true gain of labeling one case against its score.

  python -m experiments.probe --run=runs/hippocampus/random/seed_0 --out=runs/hippocampus/probe \
      [--candidates=30] [--seeds=0-2] [--jobs=2] [--draw_seed=0]

Starts at round 1 of a finished run (its labeled set L and model F(1)), draws --candidates
cases from those round 2's query could pick (the pool minus §3.4's exclusion), fine-tunes
F(1) on L ∪ {x} for one stage of the run's length under each seed (and on L alone, the
baseline), and writes OUT/probe.json,
OUT/probe.md and OUT/probe_scatter.png: each score's Spearman ρ with the true gain, with a
bootstrap interval, and what a random pick and the best pick gain (assft_jax/probe.py).
Every (candidate, seed) training is a cell under OUT/cells/ that resumes, like a sweep;
--jobs=N trains N cells at once, each process pinned to its share of the CPUs.
`experiments.report DIR` shows DIR/probe/probe.json when it is there.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from absl import app, flags

from assft_jax import errors

flags.DEFINE_string("run", None, "A finished run's workdir (its round 1 is the probe's start).")
flags.DEFINE_string("out", None, "Where the cells, probe.json, probe.md and the plot go.")
flags.DEFINE_integer("candidates", 30, "Cases drawn from the pool still unlabeled at round 1.")
flags.DEFINE_string("seeds", "0-2", "Training seeds of every cell, e.g. 0-2 or 0,1,2.")
flags.DEFINE_integer("jobs", 1, "Cells trained at once, each on its share of the CPUs.")
flags.DEFINE_integer("draw_seed", 0, "Seed of the candidates' draw.")
flags.DEFINE_integer("worker", None, "Internal: train only the cells of this shard.")
flags.mark_flags_as_required(["run", "out"])
FLAGS = flags.FLAGS


def _shard(cells: list, worker: int, jobs: int) -> list:
  return cells[worker::jobs]


def _spawn(jobs: int) -> None:
  """Runs this command once per shard, each pinned to its CPUs (as a sweep pins its
  cells); waits for all; ProbeError when one fails."""
  from assft_jax.probe import ProbeError
  from assft_jax.sweep import cpu_slots, subprocess_launch

  out = Path(FLAGS.out)
  base = [sys.executable, "-m", "experiments.probe"] + [
    a for a in sys.argv[1:] if not a.startswith(("--worker", "--jobs"))
  ]
  running = []
  for i, cpus in enumerate(cpu_slots(jobs)):
    log = out / f"worker_{i}.log"
    running.append((i, subprocess_launch([*base, f"--worker={i}", f"--jobs={jobs}"], log, cpus)))
  failed = []
  while running:
    for i, job in list(running):
      rc = job.poll()
      if rc is not None:
        running.remove((i, job))
        if rc:
          failed.append(f"worker {i} (exit {rc}, log {out / f'worker_{i}.log'})")
    time.sleep(1.0)
  if failed:
    raise ProbeError(f"probe cells failed: {'; '.join(failed)}; rerun to resume")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.getLogger("assft_jax").setLevel(logging.INFO)
  with errors.cli_errors():
    from assft_jax import atomic, probe, sweep
    from assft_jax.process import enable_compilation_cache, quiet_libraries
    from assft_jax.report import plots
    from assft_jax.report import probe as probe_section

    quiet_libraries()
    out = Path(FLAGS.out)
    st = probe.setup(FLAGS.run, FLAGS.candidates, sweep.parse_seeds(FLAGS.seeds), FLAGS.draw_seed)
    enable_compilation_cache(st.cfg)
    plan = {"run": str(st.run), "candidates": st.candidates, "seeds": st.seeds}
    path = out / "probe_setup.json"
    if path.is_file() and json.loads(path.read_text()) != plan:
      raise probe.ProbeError(
        f"{path} holds another probe (other run, candidates or seeds); give another --out"
      )
    atomic.write_json(path, plan)
    cells = st.cells()
    if FLAGS.worker is not None:
      probe.run_cells(st, out, _shard(cells, FLAGS.worker, FLAGS.jobs))
      return
    if FLAGS.jobs > 1:
      _spawn(FLAGS.jobs)
    else:
      probe.run_cells(st, out, cells)
    res = probe.analyse(st, probe.gains(st, out))
    atomic.write_json(out / "probe.json", res)
    plots.plot_probe(res, out / "probe_scatter.png")
    md = ["# Probe", "", *probe_section.markdown(res, "probe_scatter.png")]
    atomic.write_text(out / "probe.md", "\n".join(md) + "\n")
    print(f"wrote {out / 'probe.json'}, {out / 'probe.md'}, {out / 'probe_scatter.png'}")


if __name__ == "__main__":
  app.run(main)
