"""Selective semi-supervised selection (paper §3.3): which unlabeled cases to pseudo-label."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from assft_jax.pool import Pool
from assft_jax.scoring import assft, embed_kernels
from assft_jax.strategies.base import StrategyError, check_inputs, top


def n_su(n_b: int, r: int, n_unlabeled: int) -> int:
  """N_SU = N_B · r, capped at the number of unlabeled cases."""
  return int(max(0, min(n_b * r, n_unlabeled)))


def select_reliable(
  stats: Mapping, pool: Pool, n_su: int, tau_c: float = 1.0
) -> tuple[list[str], int]:
  """Picks the N_SU unlabeled cases to pseudo-label. Returns (ids, K).

  1. C (stats["conf"], Eq. 17-22) over T_u = pool.unlabeled (excluded cases included:
     exclusion only bars querying); C_mean = mean C over T_u (Eq. 23).
  2. K = n_candidates(N_SU, C_mean, tau_c, |T_u|) (Eq. 24); candidates = top K by C.
  3. D = min cosine distance of a candidate's emb_r to the labeled cases' emb_r
     (anchors, Eq. 25; on the device, float32); R = C (1 - D) (Eq. 26); return the top
     N_SU by R. C, K and the picks stay on the host (O(N) on [N] vectors).
  n_su is capped at |T_u|; ties keep pool order. n_su = 0 returns ([], 0).
  """
  if not pool.unlabeled:
    raise StrategyError("select_reliable: the pool has no unlabeled case")
  if not pool.labeled:
    raise StrategyError("select_reliable: no labeled case to use as an anchor")
  n = min(int(n_su), len(pool.unlabeled))
  if n < 0:
    raise StrategyError(f"select_reliable: n_su must be >= 0, got {n_su}")
  if n == 0:
    return [], 0
  everything = Pool(labeled=pool.labeled, unlabeled=pool.unlabeled)  # no exclusion here
  table, _ = check_inputs(
    "select_reliable", stats, everything, n, ("conf", "emb_r"), ("emb_r",), allow_all=False
  )
  conf = np.asarray(table.get("conf"), np.float64)
  k = assft.n_candidates(n, float(conf.mean()), tau_c, len(conf))
  cand = top(conf, k)
  dist = embed_kernels.semantic_distance(table.get("emb_r")[cand], table.get("emb_r", "labeled"))
  best = cand[top(assft.reliability(conf[cand], np.asarray(dist)), n)]
  return [table.cand[i] for i in best], k
