"""Benchmark section `runs`: K runs trained as one program against K separate cells.

  python -m experiments.bench runs [--quick] [--json=out.json]

The train step of a benchmark cell (SegResNetDS init_filters 8, blocks 1,1,1,1, 8 classes,
batch 2 x 32^3, augmentation, AdamW; the conv kernel "auto" picks) in three forms:
- one process with K = 1, 4 and 16 runs in one program (`make_train_step(runs=K)`),
  "loop" (each run's own step in turn, the CPU mode) and "vmap" (one vectorised jitted
  step, the accelerator mode), using every core;
- the reference: K separate cells as a sweep runs them with --jobs, one process per core
  (each pinned to its core), each stepping its own run.
A row's jax_s is the seconds per run-step of the program (its wall time per step / K),
ref_s the same of the separate cells (their wall time / the steps they made together),
so ratio = jax_s / ref_s < 1 means the program trains more runs per second. The
in-process forms are timed round-robin; the separate cells run between them, in each of
the two passes. Not a test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from experiments.benchmarks import timing

ARCH = dict(init_filters=8, blocks_down=(1, 1, 1, 1), out_channels=8)
SIZE, BATCH = 32, 2
KS = (1, 4, 16)
QUICK_KS = (1, 4)


def _batch(rng, k: int | None) -> dict:
  shape = (BATCH, SIZE, SIZE, SIZE)
  lead = () if k is None else (k,)
  return {
    "image": rng.normal(size=(*lead, *shape, 1)).astype(np.float32),
    "label": rng.integers(0, ARCH["out_channels"], size=(*lead, *shape)).astype(np.int32),
  }


def _program(k: int, batched: str):
  """A step of k runs (k = 0: the single-run step) and its state, batch and keys."""
  import jax
  import jax.numpy as jnp

  from assft_jax.data import AugmentConfig
  from assft_jax.engine import create_state, make_mesh, make_optimizer, make_train_step
  from assft_jax.engine.train import stack
  from assft_jax.models import SegResNetDS, init_variables

  module = SegResNetDS(**ARCH)
  tx = make_optimizer(3e-3, 10_000)
  step = make_train_step(
    module, tx, make_mesh(jax.local_devices()[:1]), ARCH["out_channels"],
    augment_cfg=AugmentConfig(), runs=k, batched=batched,
  )  # fmt: skip
  rng = np.random.default_rng(0)
  if k:
    states = [create_state(init_variables(module, jax.random.key(i)), tx) for i in range(k)]
    state = states if batched == "loop" else stack(states)
    keys = jnp.stack([jax.random.PRNGKey(i) for i in range(k)])
  else:
    state = create_state(init_variables(module, jax.random.key(0)), tx)
    keys = jax.random.PRNGKey(0)
  batch = _batch(rng, k or None)
  holder = {"s": state}

  def run(n: int):
    for _ in range(n):
      holder["s"], m = step(holder["s"], batch, keys)
    return m

  return run


def _child(steps: int) -> None:
  """One separate cell: `steps` single-run steps after a warm-up; prints its seconds."""
  run = _program(0, "loop")
  timing.block(run(2))
  t0 = time.perf_counter()
  timing.block(run(steps))
  print(json.dumps({"seconds": time.perf_counter() - t0}))


def _separate_cells(jobs: int, steps: int) -> float:
  """Seconds per run-step of `jobs` separate cells stepping at once, each on its core."""
  cpus = sorted(os.sched_getaffinity(0))
  root = Path(__file__).resolve().parents[2]
  procs = []
  for j in range(jobs):
    cpu = {cpus[j % len(cpus)]}
    procs.append(
      subprocess.Popen(
        [sys.executable, "-m", "experiments.benchmarks.runs", str(steps)],
        cwd=root,
        stdout=subprocess.PIPE,
        preexec_fn=lambda cpu=cpu: os.sched_setaffinity(0, cpu),
      )
    )
  seconds = []
  for p in procs:
    out, _ = p.communicate()
    if p.returncode:
      raise RuntimeError(f"a separate cell failed (exit {p.returncode})")
    seconds.append(json.loads(out.decode().strip().splitlines()[-1])["seconds"])
  return max(seconds) / (jobs * steps)


def run(quick: bool) -> list[dict]:
  ks = QUICK_KS if quick else KS
  steps = 3 if quick else 10
  jobs = len(os.sched_getaffinity(0))
  forms = {(1, "alone"): _program(0, "loop")}
  for k in ks[1:]:
    for batched in ("loop", "vmap"):
      forms[(k, batched)] = _program(k, batched)
  ref_name = f"{jobs} separate cells (--jobs={jobs}, one core each)"
  n = {key: max(1, steps * 4 // max(4, key[0])) for key in forms}  # ~equal time per call
  passes = []
  for _ in range(timing.PASSES):
    times, _ = timing.interleaved(
      {key: (lambda key=key: forms[key](n[key])) for key in forms}, timing.repeats(quick)
    )
    ref = _separate_cells(jobs, steps)
    passes.append(
      [
        timing.Sample(
          f"K={key[0]} {key[1]}, one process",
          [t / (n[key] * key[0]) for t in ts],
          ref_name,
          [ref] * len(ts),
          extra={"note": "seconds per run-step; jax_s: the runs in one program, every core"},
        )
        for key, ts in times.items()
      ]
    )
  return timing.merge(passes)


if __name__ == "__main__":
  _child(int(sys.argv[1]))
