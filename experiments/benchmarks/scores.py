"""Benchmark section `scores`: the embedding scores (Eq. 1-5, 25) as float32 device
kernels (`scoring.embed_kernels`) against the float64 numpy reference of the tests
(`tests/_assft_reference.py`; run from the repository's root).

Command: `python -m experiments.bench scores` (`--quick`: N = 2,000, F = 128).
Rows at N = 10,000 cases, F = 512: PAKD, PD (given PAKD), DKD, D (to 500 anchors), and
DKD of 3 runs at once (vmapped) against 3 numpy calls. Each row times numpy arrays in,
numpy arrays out, as the strategies call them. The shared timer (timing.py) calls the
two contenders alternately (after one warm-up call each, which also compiles), `REPEATS`
rounds, in 2 passes over the five rows: min/median/max of each, ratio = the ratio of the
medians (lower is better), ratio_p1/ratio_p2 and their spread.
"""

from __future__ import annotations

import jax
import numpy as np

from assft_jax.scoring import embed_kernels
from experiments.benchmarks import timing
from experiments.benchmarks.timing import Sample
from tests import _assft_reference as ref64

SIZES = (10_000, 512, 500)  # cases N, features F, anchors
QUICK_SIZES = (2_000, 128, 100)


def run(quick: bool) -> list[dict]:
  n, f, a = QUICK_SIZES if quick else SIZES
  rng = np.random.default_rng(0)
  e0 = rng.normal(size=(n, f)).astype(np.float32)
  er = (e0 + 0.3 * rng.normal(size=e0.shape)).astype(np.float32)
  k = np.asarray(embed_kernels.pakd(e0, er))
  anchors = er[:a]
  runs0, runsr = np.stack([e0] * 3), np.stack([er, er[::-1], np.roll(er, 1, 0)])
  dkd_runs = jax.jit(jax.vmap(embed_kernels.dkd))
  ref_name = "numpy float64"
  size = f"N={n} F={f}"

  # (row, kernel name in both embed_kernels and the reference, its arguments)
  rows = [
    (f"pakd {size}", "pakd", (e0, er)),
    (f"pd {size}", "pairwise_dissimilarity", (er, k)),
    (f"dkd {size}", "dkd", (e0, er)),
    (f"D {size} to {a} anchors", "semantic_distance", (er, anchors)),
  ]

  def one_pass() -> list[Sample]:
    # the device results are read back: numpy out, as the strategies use them
    samples = [
      timing.pair(
        name,
        lambda fn=fn, args=args: np.asarray(getattr(embed_kernels, fn)(*args)),
        ref_name,
        lambda fn=fn, args=args: getattr(ref64, fn)(*args),
      )
      for name, fn, args in rows
    ]
    samples.append(
      timing.pair(
        f"dkd 3 runs {size} (vmap)",
        lambda: np.asarray(dkd_runs(runs0, runsr)),
        "3 numpy float64 calls",
        lambda: [ref64.dkd(x, y) for x, y in zip(runs0, runsr)],
      )
    )
    return samples

  return timing.over_passes(one_pass)
