"""Benchmark section `scores`: the embedding scores (Eq. 1-5, 25) as float32 device
kernels (`scoring.embed_kernels`) against the float64 numpy reference (`scoring.assft`).

Command: `python -m experiments.bench scores` (`--quick`: N = 2,000, F = 128).
Rows at N = 10,000 cases, F = 512: PAKD, PD (given PAKD), DKD, D (to 500 anchors), and
DKD of 3 runs at once (vmapped) against 3 numpy calls. Each row times numpy arrays in,
numpy arrays out, as the strategies call them. The two contenders alternate within
every repeat (after one warm-up call each, which also compiles), so a change in the
machine's load hits both; jax_s / ref_s are medians, with min and max beside them, and
`ratio` = jax_s / ref_s (lower is better).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from assft_jax.scoring import assft, embed_kernels

REPEATS = 7


def _seconds(fn: Callable[[], Any]) -> float:
  t0 = time.perf_counter()
  np.asarray(jax.block_until_ready(fn()))
  return time.perf_counter() - t0


def interleaved(name: str, jax_fn: Callable[[], Any], ref: str, ref_fn: Callable[[], Any]) -> dict:
  """One row: `REPEATS` alternating timings of each contender after a warm-up call."""
  times: dict[str, list[float]] = {"jax": [], "ref": []}
  _seconds(jax_fn), _seconds(ref_fn)
  for _ in range(REPEATS):
    times["jax"].append(_seconds(jax_fn))
    times["ref"].append(_seconds(ref_fn))
  row: dict[str, Any] = {"name": name, "ref": ref, "repeats": REPEATS}
  for who, ts in times.items():
    row[f"{who}_s"] = statistics.median(ts)
    row[f"{who}_min"], row[f"{who}_max"] = min(ts), max(ts)
  row["ratio"] = row["jax_s"] / row["ref_s"]
  return row


def run(quick: bool) -> list[dict]:
  n, f, a = (2_000, 128, 100) if quick else (10_000, 512, 500)
  rng = np.random.default_rng(0)
  e0 = rng.normal(size=(n, f)).astype(np.float32)
  er = (e0 + 0.3 * rng.normal(size=e0.shape)).astype(np.float32)
  k = np.asarray(embed_kernels.pakd(e0, er))
  anchors = er[:a]
  runs0, runsr = np.stack([e0] * 3), np.stack([er, er[::-1], np.roll(er, 1, 0)])
  dkd_runs = jax.jit(jax.vmap(embed_kernels.dkd))
  ref64 = "numpy float64"
  size = f"N={n} F={f}"
  return [
    interleaved(
      f"pakd {size}", lambda: embed_kernels.pakd(e0, er), ref64, lambda: assft.pakd(e0, er)
    ),
    interleaved(
      f"pd {size}",
      lambda: embed_kernels.pairwise_dissimilarity(er, k),
      ref64,
      lambda: assft.pairwise_dissimilarity(er, k),
    ),
    interleaved(f"dkd {size}", lambda: embed_kernels.dkd(e0, er), ref64, lambda: assft.dkd(e0, er)),
    interleaved(
      f"D {size} to {a} anchors",
      lambda: embed_kernels.semantic_distance(er, anchors),
      ref64,
      lambda: assft.semantic_distance(er, anchors),
    ),
    interleaved(
      f"dkd 3 runs {size} (vmap)",
      lambda: dkd_runs(runs0, runsr),
      "3 numpy float64 calls",
      lambda: [assft.dkd(x, y) for x, y in zip(runs0, runsr)],
    ),
  ]
