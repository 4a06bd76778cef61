"""Benchmark section `scaling`: the one train step on 1, 2 and 4 virtual CPU devices.

Command: `python -m experiments.bench scaling` or `python -m experiments.benchmarks.scaling
[--quick]`. Each device count runs in its own process
(XLA_FLAGS=--xla_force_host_platform_device_count=n must precede jax's start), with the
same global batch (4 x 32^3; quick 4 x 16^3), SegResNetDS(init_filters 8, 5 levels;
quick 4, 3 levels). The device counts run one process after the other, 1, 2, 4, and the
whole sequence twice (2 passes); each process times its step with the shared timer
(timing.py, `REPEATS` calls after a warm-up, quick 3). Rows: min/median/max step time,
ratio = median / the 1-device median, ratio_p1/ratio_p2 and their spread, and
correctness vs 1 device (pass 1's): |loss| difference at steps 1 and 2, relative grad-norm
difference at step 1, max |params| difference after 2 steps and the fraction of weights
differing by more than 1e-5 (AdamW's first updates are ~lr * sign(grad), so a weight
whose gradient is ~0 can move +-lr on one device count and -+lr on another: a few such
weights give max_dparams ~ 2 lr without any real disagreement). The "noise floor" row
runs the same 2 steps on 1 device with the batch order reversed -- mathematically the
same step -- to show the float32 size of such differences for this network.
The timed steps run under `jax.transfer_guard("disallow")` on a pre-sharded batch;
`compiles` is the step's jit cache size at the end (1 = no recompile across calls).
Virtual devices share the same CPU cores, so this measures the sharding overhead and
checks the numbers, not a speed-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from experiments.benchmarks import timing

COUNTS = (1, 2, 4)
_SCRIPT = """
import json, sys
import jax, numpy as np
from assft_jax import atomic
from assft_jax.engine import create_state, make_mesh, make_optimizer, make_train_step
from assft_jax.models import SegResNetDS, init_variables
from experiments.benchmarks import timing
size, out = int(sys.argv[1]), sys.argv[2]
quick = size < 32
arch = dict(init_filters=4, blocks_down=(1, 1, 1)) if quick else dict(init_filters=8)
module = SegResNetDS(out_channels=2, **arch)
variables = init_variables(module, jax.random.key(0), 16)
tx = make_optimizer(1e-3, 100)
step = make_train_step(module, tx, make_mesh(), 2)
rng = np.random.default_rng(0)
image = rng.normal(size=(4, size, size, size, 1)).astype(np.float32)
batch = {"image": image, "label": (image[..., 0] > 0.5).astype(np.int32)}
s = create_state(variables, tx)
losses, gnorms = [], []
for _ in range(2):
  s, m = step(s, batch, jax.random.key(0))
  losses.append(float(m["loss"]))
  gnorms.append(float(m["grad_norm"]))
def save(path, params):
  atomic.write_npz(path, {f"arr_{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(params))})
save(out, s["params"])
if len(jax.devices()) == 1:  # noise floor: the same 2 steps on the reversed batch order
  sp = create_state(variables, tx)
  rev = {k: x[::-1].copy() for k, x in batch.items()}
  for _ in range(2):
    sp, _ = step(sp, rev, jax.random.key(0))
  save(out.replace(".npz", "_rev.npz"), sp["params"])
from assft_jax.engine.train import shard_batch
placed, key = shard_batch(batch, step.mesh), jax.device_put(jax.random.key(0))
holder = {"s": s}
def run():
  # big_vision habit: a host round trip inside the timed step would raise here
  with jax.transfer_guard("disallow"):
    holder["s"], m = step(holder["s"], placed, key)
  return m
times, _ = timing.interleaved({"step": run}, timing.repeats(quick))
print(json.dumps({"devices": len(jax.devices()), "loss": losses, "gnorm": gnorms,
                  "step_times": times["step"], "compiles": step.jitted.traces()}))
"""


def _one(n: int, size: int, out: Path) -> dict:
  root = Path(__file__).resolve().parents[2]
  env = dict(
    os.environ,
    XLA_FLAGS=f"--xla_force_host_platform_device_count={n}",
    JAX_PLATFORMS="cpu",
    PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
  )
  proc = subprocess.run(
    [sys.executable, "-c", _SCRIPT, str(size), str(out)], env=env, capture_output=True, text=True
  )
  if proc.returncode:
    raise RuntimeError(f"scaling run with {n} devices failed:\n{proc.stderr[-2000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _params(path: Path) -> list[np.ndarray]:
  with np.load(path) as z:
    return [z[k] for k in sorted(z.files, key=lambda k: int(k.split("_")[1]))]


def _diffs(a: list[np.ndarray], b: list[np.ndarray]) -> dict:
  d = [np.abs(x - y) for x, y in zip(a, b)]
  return {
    "max_dparams": max(float(x.max()) for x in d),
    "frac_dparams_gt_1e-5": float(sum((x > 1e-5).sum() for x in d) / sum(x.size for x in d)),
  }


def run(quick: bool) -> list[dict]:
  size = 16 if quick else 32
  passes = []
  with tempfile.TemporaryDirectory() as tmp:
    for k in range(timing.PASSES):
      res = {n: _one(n, size, Path(tmp) / f"params{n}_p{k}.npz") for n in COUNTS}
      base = res[1]
      samples = []
      for n, r in res.items():
        extra = {
          "devices": r["devices"],
          "compiles": r["compiles"],
          "dloss_step1": abs(r["loss"][0] - base["loss"][0]),
          "dloss_step2": abs(r["loss"][1] - base["loss"][1]),
          "rel_dgnorm_step1": abs(r["gnorm"][0] / base["gnorm"][0] - 1),
          **_diffs(
            _params(Path(tmp) / f"params{n}_p{k}.npz"), _params(Path(tmp) / f"params1_p{k}.npz")
          ),
        }
        samples.append(
          timing.Sample(
            f"train_step {n} dev 4x{size}^3",
            r["step_times"],
            "1 device",
            base["step_times"],
            extra=extra,
          )
        )
      passes.append(samples)
    p1 = Path(tmp) / "params1_p0.npz"
    floor = {
      "name": f"noise floor: 1 dev, batch order reversed 4x{size}^3",
      "jax_s": float("nan"),
      **_diffs(_params(Path(str(p1).replace(".npz", "_rev.npz"))), _params(p1)),
    }
  return [floor, *timing.merge(passes)]


if __name__ == "__main__":
  for r in run(quick="--quick" in sys.argv):
    print({k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()})
