"""Hybrid medical-segmentation baselines: SANN, UGTST, CUP."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning

from assft_jax.scoring import kernels
from assft_jax.scoring.assft import unit_rows
from assft_jax.strategies.base import Picked, Table, register, seed_from, top


def max_cover(sim: np.ndarray, k: int) -> list[int]:
  """Greedy max-cover: picks k columns of sim [U, M] maximising sum_u max_{s in S} sim[u, s].

  Each step adds the column with the largest objective (ties: lowest index). The empty
  set's cover is taken as -1 per row (the cosine minimum), so the first pick is the
  column with the largest total similarity.
  """
  cover = np.full(sim.shape[0], -1.0)
  picks: list[int] = []
  for _ in range(k):
    gain = np.maximum(cover[:, None], sim).sum(axis=0)
    gain[picks] = -np.inf
    j = int(np.argmax(gain))
    picks.append(j)
    cover = np.maximum(cover, sim[:, j])
  return picks


@register("sann", keys=("entropy", "emb_r"), options=("sann_pool",))
def sann(table: Table, budget: int, rng: np.random.Generator, *, sann_pool: int = 2) -> Picked:
  """Suggestive annotation (Yang et al. 2017), per case: the top `sann_pool`·N_B by mean
  entropy, then greedy max-cover of all unlabeled cases (excluded ones included: they
  still need representing) by cosine similarity of E^(r) embeddings."""
  cand = top(table.get("entropy"), min(sann_pool * budget, len(table.cand)))
  emb_c = table.get("emb_r")[cand]
  sim = 1.0 - kernels.cosine_distance_matrix(table.get("emb_r", "unlabeled"), emb_c)
  return cand[max_cover(np.asarray(sim, np.float64), budget)], {}


@register("ugtst", keys=("ugtst", "emb_r"), options=("ugtst_pool",))
def ugtst(table: Table, budget: int, rng: np.random.Generator, *, ugtst_pool: int = 4) -> Picked:
  """UGTST (Luo et al. 2024), per case: the top `ugtst_pool`·N_B by u (kernels.ugtst_score),
  KMeans(N_B) on their unit-normalised E^(r) embeddings (Euclidean on unit vectors ~
  cosine), and per cluster the member nearest its centroid. A cluster left empty (only
  with duplicate embeddings) is filled by the best remaining u."""
  u = table.get("ugtst")
  cand = top(u, min(ugtst_pool * budget, len(table.cand)))
  x = unit_rows(np.asarray(table.get("emb_r")[cand], np.float64))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)  # duplicates: handled below
    km = KMeans(n_clusters=budget, n_init=10, random_state=seed_from(rng)).fit(x)
  picks = []
  for c in range(budget):
    members = np.flatnonzero(km.labels_ == c)
    if len(members):
      d = np.linalg.norm(x[members] - km.cluster_centers_[c], axis=1)
      picks.append(int(members[np.argmin(d)]))
  rest = [i for i in range(len(cand)) if i not in set(picks)]  # cand is u-descending
  picks += rest[: budget - len(picks)]
  return cand[np.asarray(picks)], {}


@register("cup", keys=("usum", "fg_frac"), options=("cup_pool",))
def cup(table: Table, budget: int, rng: np.random.Generator, *, cup_pool: int = 2) -> Picked:
  """CUP (Wang et al. 2024b) cascade as in its official code: the top `cup_pool`·N_B by
  summed voxel entropy, then the top N_B by predicted foreground fraction. (The paper's
  text says "low uncertainty"; this implementation follows the code.)"""
  cand = top(table.get("usum"), min(cup_pool * budget, len(table.cand)))
  return cand[top(table.get("fg_frac")[cand], budget)], {}
