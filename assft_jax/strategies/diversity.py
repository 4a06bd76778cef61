"""Core-set (k-center greedy) and BADGE (gradient embeddings + k-means++ seeding)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.metrics import pairwise_distances

from assft_jax.strategies.base import Picked, Table, register


def _min_dist(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
  """min_j ||x_i - c_j||_2: [N], [N, F] x [M, F]; float64; +inf if M = 0."""
  if len(centers) == 0:
    return np.full(len(x), np.inf)
  if len(centers) == 1:  # the greedy loops' per-step update: skip sklearn's overhead
    return np.sqrt(np.einsum("nf,nf->n", x - centers[0], x - centers[0]))
  return pairwise_distances(x, centers, metric="euclidean").min(axis=1)


@register("coreset", keys=("emb_r",), labeled_keys=("emb_r",))
def coreset(table: Table, budget: int, rng: np.random.Generator) -> Picked:
  """Sener & Savarese's k-center greedy on E^(r) embeddings, Euclidean distance.

  Labeled cases are the initial centers; each step takes the queryable case farthest
  from its nearest center (ties: pool order) and adds it as a center. With no labeled
  case the first pick is uniform from `rng`. Only queryable cases are candidates.
  """
  x = np.asarray(table.get("emb_r"), np.float64)
  d2 = _min_dist(x, np.asarray(table.get("emb_r", "labeled"), np.float64)) ** 2
  sqn = np.einsum("nf,nf->n", x, x)
  picks = []
  for step in range(budget):
    first_free = step == 0 and np.isinf(d2).all()
    i = int(rng.integers(len(x))) if first_free else int(np.argmax(d2))
    picks.append(i)
    # |x - c|^2 = |x|^2 + |c|^2 - 2 x.c: one mat-vec per step instead of an [N, F] temp
    d2 = np.minimum(d2, np.maximum(sqn + sqn[i] - 2.0 * (x @ x[i]), 0.0))
    d2[picks] = -1.0  # a chosen case is a center: never again the farthest
  return np.asarray(picks), {}


def kmeanspp_seeding(g: np.ndarray, k: int, draw: Callable[[np.ndarray], int]) -> list[int]:
  """BADGE's seeding of k rows of g: [N, G]. First: the largest norm (ties: lowest
  index). Then `draw(p)` picks the next row from p ∝ D^2, D = distance to the nearest
  pick, kept incrementally (O(N k G)). If every D is 0 (only duplicates of picks
  remain), p is uniform over the unpicked rows (scikit-activeml's Badge rule)."""
  g = np.asarray(g, np.float64)
  picks = [int(np.argmax(np.einsum("nf,nf->n", g, g)))]
  d2 = _min_dist(g, g[picks]) ** 2
  while len(picks) < k:
    d2[picks] = 0.0
    p = d2.copy()
    if p.sum() <= 0:
      p = np.ones(len(g))
      p[picks] = 0.0
    picks.append(int(draw(p / p.sum())))
    d2 = np.minimum(d2, _min_dist(g, g[picks[-1:]]) ** 2)
  return picks


@register("badge", keys=("badge",))
def badge(table: Table, budget: int, rng: np.random.Generator) -> Picked:
  """BADGE (Ash et al. 2020) on per-case gradient embeddings stats["badge"] [N, G].

  `kmeanspp_seeding` with draws from `rng`. sklearn.cluster.kmeans_plusplus cannot be
  used: it draws the first center at random (forcing the largest-norm one would need
  sample_weight, which also reweights every later D^2 draw) and by default keeps the
  best of 2 + log k local trials instead of one plain D^2 draw.
  """
  g = table.get("badge")
  return np.asarray(kmeanspp_seeding(g, budget, lambda p: rng.choice(len(p), p=p))), {}
