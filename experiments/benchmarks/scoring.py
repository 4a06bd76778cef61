"""Benchmark section `scoring`: voxel-statistics kernels vs numpy; PD/DKD at scale.

Command: `python -m experiments.bench scoring` (or, directly,
`python -c "from experiments.benchmarks import scoring; print(scoring.run(quick=False))"`).
Rows: the jitted `reduce_case_stats` vs the same statistics in vectorised numpy float32
(ratio = jax / numpy); DKD (PAKD + PD, O(N F) via cumulative sums) at N = 1,000 and
10,000, F = 512 (goal <= 2 s), vs a direct O(N^2) numpy formula at N = 1,000; and the
select time of the heavier strategies at N = 2,000. Every row is timed by the shared
timer (timing.py: round-robin where there is a reference, `REPEATS` rounds, quick 3;
2 passes over all rows, with min/median/max, the ratio of the medians,
ratio_p1/ratio_p2 and their spread).
"""

from __future__ import annotations

import math
import sys

import numpy as np

from assft_jax import strategies
from assft_jax.pool import Pool
from assft_jax.scoring import embed_kernels, kernels
from experiments.benchmarks import timing
from experiments.benchmarks.timing import Sample


def _numpy_stats(p: np.ndarray, tau: float) -> dict[str, np.ndarray]:
  """The same per-case statistics as kernels.reduce_case_stats, in numpy float32."""
  n, c = p.shape[0], p.shape[-1]
  with np.errstate(divide="ignore", invalid="ignore"):
    h = -np.where(p > 0, p * np.log(p), 0).sum(-1).reshape(n, -1)
  top2 = np.partition(p, c - 2, axis=-1)[..., -2:].reshape(n, -1, 2)
  marg = top2[..., 1] - top2[..., 0]
  flat = p.reshape(n, -1, c)
  fg = flat.argmax(-1) != 0
  pmax_fg = flat[..., 1:].max(-1)
  out = {
    "entropy": h.mean(1),
    "lc": (1 - flat.max(-1)).mean(1),
    "margin": marg.mean(1),
    "asd": np.where(flat[..., 0] / tau < pmax_fg, h, 0).mean(1),
    "asd_tau1": np.where(flat[..., 0] < pmax_fg, h, 0).mean(1),
    "conf": np.where(fg, marg, 0).sum(1) / np.maximum(fg.sum(1), 1),
    "fg_frac": fg.mean(1),
    "usum": h.sum(1),
  }
  u = []
  for hi in h:
    counts, edges = np.histogram(hi, bins=100, range=(0, math.log(c)))
    left = np.r_[-1, counts[:-1]]
    right = np.r_[counts[1:], -1]
    i = int(np.argmax((counts > 0) & (counts >= left) & (counts > right)))
    above = hi[hi > edges[i + 1]]
    u.append(above.mean() if above.size else 0.0)
  out["ugtst"] = np.asarray(u)
  return out


def _probs(n, shape, c, seed=0):
  z = np.random.default_rng(seed).normal(size=(n, *shape, c)).astype(np.float32) * 2
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _pd_direct(embr, pakd):
  """Eq. 3-4 with a full [N, N] cosine matrix: the O(N^2) reference formula."""
  u = embr / np.linalg.norm(embr, axis=1, keepdims=True)
  order = np.argsort(-pakd, kind="stable")
  s = u[order]
  n = len(s)
  dist = 1 - s @ s.T
  c = np.arange(n)[:, None]
  w = np.tril(c - np.arange(n)[None, :], -1)  # weight c - j for j < c (0-based)
  pd = np.ones(n)
  pd[1:] = (w * dist).sum(1)[1:] / w.sum(1)[1:]
  out = np.empty(n)
  out[order] = pd
  return out


def run(quick: bool) -> list[dict]:
  reps = timing.repeats(quick)
  n, shape, c = (2, (32, 32, 32), 4) if quick else (2, (64, 96, 96), 8)
  p = _probs(n, shape, c)
  tau = kernels.temperature(1, 5)
  rng = np.random.default_rng(0)
  embs = {}
  for n_emb in (1_000, 10_000):
    e0 = rng.normal(size=(n_emb, 512)).astype(np.float32)
    embs[n_emb] = (e0, (e0 + 0.3 * rng.normal(size=e0.shape)).astype(np.float32))
  e0k, erk = embs[1_000]
  pakd_1k = np.asarray(embed_kernels.pakd(e0k, erk), np.float64)
  a = rng.normal(size=(10_000, 512)).astype(np.float32)
  n_s = 2_000 if not quick else 500
  ids = [f"c{i}" for i in range(n_s)]
  stats = {
    "ids": ids,
    "emb_0": rng.normal(size=(n_s, 512)),
    "emb_r": rng.normal(size=(n_s, 512)),
    "badge": rng.normal(size=(n_s, 128)),
  }
  for k in ("entropy", "asd", "ugtst"):
    stats[k] = rng.random(n_s)
  pool = Pool(labeled={i: 0 for i in ids[:10]}, unlabeled=tuple(ids[10:]))

  def one_pass() -> list[Sample]:
    samples = [
      timing.pair(
        f"reduce_case_stats [{n},{'x'.join(map(str, shape))},{c}]",
        lambda: kernels.reduce_case_stats(p, 1, 5),
        "numpy float32",
        lambda: _numpy_stats(p, tau),
        reps,
      ),
      timing.pair(
        "dkd N=1000 F=512 (goal <= 2 s)",
        lambda: np.asarray(embed_kernels.dkd(e0k, erk)),
        "O(N^2) numpy PD",
        lambda: pakd_1k * _pd_direct(e0k.astype(np.float64), pakd_1k),
        reps,
      ),
      timing.pair(
        "dkd N=10000 F=512 (goal <= 2 s)",
        lambda: np.asarray(embed_kernels.dkd(*embs[10_000])),
        None,
        None,
        reps,
      ),
    ]
    if not quick:
      samples.append(
        timing.pair(
          "min_cosine_distance 10k x 10k F=512 (blockwise, float32)",
          lambda: kernels.min_cosine_distance(a, a),
          None,
          None,
          reps,
        )
      )
    for name in ("coreset", "badge", "sann", "ugtst", "dkd_asd"):
      samples.append(
        timing.pair(
          f"select {name} N={n_s} budget=50",
          lambda name=name: strategies.get(name).select(stats, pool, 50, np.random.default_rng(0)),
          None,
          None,
          reps,
        )
      )
    return samples

  return timing.over_passes(one_pass)


if __name__ == "__main__":
  for r in run(quick="--quick" in sys.argv):
    print(r)
