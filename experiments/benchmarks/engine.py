"""Benchmark section `engine`: sliding-window inference vs MONAI/PyTorch, scoring-pass
overhead, scoring-pass peak memory vs pool size.

Command: `python -m experiments.bench engine` or `python -m experiments.benchmarks.engine
[--quick]`. Rows (the train step vs MONAI is in the `model` section); the two timed ones
use the shared timer (timing.py: round-robin, `REPEATS` rounds, quick 3; 2 passes, with
min/median/max, the ratio of the medians, ratio_p1/ratio_p2 and their spread):
- sliding_window: SegResNetDS(init_filters 8, blocks_down (1,2,2,4,4), out 2), eval
  mode, 96^3 volume, roi 64^3, overlap 0.5, gaussian, sw_batch 2 (quick: 48^3, roi
  32^3); `sliding_window_predict` vs MONAI `sliding_window_inference`.
- score_pass_overhead: `score_pass` over 4 cases / a plain `sliding_window_predict` loop
  over the same cases (goal <= 1.1).
- score_pass_rss: a fresh process runs `score_pass` over 8, then over 32 lazily
  generated cases: peak RSS (peak32_over_peak8; not a JAX/reference time ratio, so not
  named "ratio") and RSS growth after the first
  (compiling) case (goal: flat).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks import timing
from experiments.benchmarks.timing import Sample

ARCH = dict(init_filters=8, in_channels=1, out_channels=2, blocks_down=(1, 2, 2, 4, 4))


def _jax_model():
  from assft_jax.models import SegResNetDS, init_variables

  module = SegResNetDS(**ARCH)
  return module, init_variables(module, jax.random.key(0), 16)


def _torch_model():
  import torch
  from monai.networks.nets import SegResNetDS as TorchSegResNetDS

  torch.manual_seed(0)
  return TorchSegResNetDS(spatial_dims=3, **ARCH)


def infer_sample(size: int, roi: int, repeats: int) -> Sample:
  from assft_jax.engine import sliding_window_predict

  module, variables = _jax_model()
  image = np.random.default_rng(1).normal(size=(size,) * 3 + (1,)).astype(np.float32)

  def jax_infer():
    return sliding_window_predict(module, variables, image, roi, sw_batch_size=2)

  torch_infer = None
  try:
    import torch
    from monai.inferers import sliding_window_inference

    net = _torch_model().eval()
    x = torch.from_numpy(image[..., 0])[None, None]

    def torch_infer():
      with torch.no_grad():
        return sliding_window_inference(x, (roi,) * 3, 2, net, overlap=0.5, mode="gaussian")
  except ImportError:
    pass
  return timing.pair(
    f"sliding_window {size}^3 roi{roi} if8",
    jax_infer,
    "monai/torch" if torch_infer is not None else None,
    torch_infer,
    repeats,
  )


def overhead_sample(size: int, n_cases: int, repeats: int) -> Sample:
  from assft_jax.engine import score_pass, sliding_window_predict

  module, variables = _jax_model()
  rng = np.random.default_rng(2)
  vols = {f"c{i}": rng.normal(size=(size,) * 3 + (1,)).astype(np.float32) for i in range(n_cases)}
  ids = list(vols)

  def plain():
    return [jnp.argmax(sliding_window_predict(module, variables, vols[i], size), -1) for i in ids]

  return timing.pair(
    f"score_pass_overhead {n_cases}x{size}^3",
    lambda: score_pass(module, variables, vols, ids, roi=size, r=1, R=5),
    "plain sliding_window",
    plain,
    repeats,
    note="goal ratio <= 1.1",
  )


class LazyVolumes(Mapping):
  """id -> image generated on access (a disk-backed cache stand-in: the pool's inputs
  are never all in memory, so RSS measures the pass itself). Records the process RSS
  (MB) at each access in `.rss`."""

  def __init__(self, n: int, size: int):
    self.ids, self.size, self.rss = [f"c{i}" for i in range(n)], size, []

  def __getitem__(self, cid):
    import psutil

    self.rss.append(psutil.Process().memory_info().rss / 2**20)
    seed = int(cid[1:])
    return np.random.default_rng(seed).normal(size=(self.size,) * 3 + (1,)).astype(np.float32)

  def __iter__(self):
    return iter(self.ids)

  def __len__(self):
    return len(self.ids)


def peak_rss_mb() -> float:
  """This process's peak RSS (VmHWM) in MB. Not ru_maxrss: on Linux that survives
  fork+exec, so a child started by a big benchmark process reported the parent's peak."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024
  raise RuntimeError("no VmHWM in /proc/self/status")


_RSS_SCRIPT = """
import json, sys
import jax
from assft_jax.engine import score_pass
from experiments.benchmarks.engine import LazyVolumes, _jax_model, peak_rss_mb
n, size = int(sys.argv[1]), int(sys.argv[2])
module, variables = _jax_model()
vols = LazyVolumes(n, size)
out = score_pass(module, variables, vols, vols.ids, roi=size, r=1, R=5)
vols["c0"]  # one more RSS sample after the last case
print(json.dumps({"n": len(out["ids"]), "rss": vols.rss,
                  "peak_mb": peak_rss_mb()}))
"""


def rss_rows(size: int) -> list[dict]:
  """Peak RSS (VmHWM, includes XLA compilation), RSS after the last case, and the
  RSS growth after the first (compiling) case: max(RSS at case k >= 2) - RSS at case 2.
  (RSS settles over the first few cases; after that it should stay flat.)"""
  res = {}
  for n in (8, 32):
    proc = subprocess.run(
      [sys.executable, "-c", _RSS_SCRIPT, str(n), str(size)],
      capture_output=True,
      text=True,
      check=True,
    )
    res[n] = json.loads(proc.stdout.strip().splitlines()[-1])
  grow = {n: max(r["rss"][1:]) - r["rss"][1] for n, r in res.items()}
  return [
    {
      "name": f"score_pass_rss {size}^3 8 vs 32 cases",
      "jax_s": float("nan"),
      "peak8_mb": res[8]["peak_mb"],
      "peak32_mb": res[32]["peak_mb"],
      "growth8_mb": grow[8],
      "growth32_mb": grow[32],
      "end8_mb": res[8]["rss"][-1],
      "end32_mb": res[32]["rss"][-1],
      "peak32_over_peak8": res[32]["peak_mb"] / res[8]["peak_mb"],
      "note": "goal: flat (peak ratio ~ 1, growth ~ 0)",
    }
  ]


def run(quick: bool) -> list[dict]:
  size, roi, vol = (32, 32, 48) if quick else (64, 64, 96)
  reps = timing.repeats(quick)
  rows = timing.over_passes(lambda: [infer_sample(vol, roi, reps), overhead_sample(size, 4, reps)])
  return rows + rss_rows(size)


if __name__ == "__main__":
  for r in run(quick="--quick" in sys.argv):
    print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
