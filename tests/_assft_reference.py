"""The embedding scores of the paper (PAKD, PD, DKD, D: Eq. 1-5, 25) in float64 numpy: the
reference that the float32 device kernels (`assft_jax.scoring.embed_kernels`) are tested
against, itself tested against the literal double loops of Eq. 3-4 (test_scoring_assft).

PD uses the cumulative-sum form (O(N F), no pair loop): with unit vectors s ranked by PAKD,
sum_{j<c} (c - j)(1 - s_c.s_j) = c(c-1)/2 - s_c . W_c, where W_c = sum_{m<c} S_m and
S_m = s_1 + ... + s_m.
"""

from __future__ import annotations

import numpy as np


def _unit64(x) -> np.ndarray:
  """A validated float64 copy of x [N, F], rows normalised in place."""
  x = np.array(x, np.float64)
  if x.ndim != 2:
    raise ValueError(f"embeddings must be [N, F], got shape {x.shape}")
  x /= np.maximum(np.sqrt(np.einsum("nf,nf->n", x, x)), 1e-300)[:, None]
  return x


def pakd(emb0, embr) -> np.ndarray:
  """Eq. 1-2. emb0, embr: [N, F] (pre-trained and current encoder) -> [N]:
  1 - cos(E0(x), Er(x)), computed as |u0 - ur|^2 / 2 of the unit vectors (exact
  algebraically, and keeps relative precision for nearly equal embeddings)."""
  return _pakd_unit(_unit64(emb0), _unit64(embr))


def _pakd_unit(u0: np.ndarray, ur: np.ndarray) -> np.ndarray:
  if u0.shape != ur.shape:
    raise ValueError(f"emb0 {u0.shape} and embr {ur.shape} must have the same shape")
  d = u0 - ur
  return 0.5 * np.einsum("nf,nf->n", d, d)


def pairwise_dissimilarity(embr, pakd) -> np.ndarray:
  """Eq. 3-4. embr: [N, F], pakd: [N] -> PD [N] in the input order.

  Rank cases by PAKD, descending (stable: ties keep input order). For rank c (1-based),
  PD_c = sum_{j<c} (c - j) cosdist(s_c, s_j) / (c (c - 1) / 2), and PD_1 = 1.
  With unit vectors s, sum_{j<c} (c - j)(1 - s_c.s_j) = c(c-1)/2 - s_c . W_c where
  W_c = sum_{j<c} (c - j) s_j = sum_{m<c} S_m and S_m = s_1 + ... + s_m: a cumulative
  sum of a cumulative sum. So PD costs O(N F), with no pair loop or [N, N] matrix.
  """
  return _pd_unit(_unit64(embr), pakd)


def _pd_unit(u: np.ndarray, pakd) -> np.ndarray:
  p = np.asarray(pakd, np.float64).ravel()
  if p.shape[0] != u.shape[0]:
    raise ValueError(f"pakd has {p.shape[0]} cases but embr has {u.shape[0]}")
  order = np.argsort(-p, kind="stable")
  s = u[order]
  n = s.shape[0]
  w = np.cumsum(s, axis=0)  # S_c
  np.cumsum(w, axis=0, out=w)  # sum_{m<=c} S_m, so W_c = w[c - 1]
  c = np.arange(2, n + 1, dtype=np.float64)
  pd_sorted = np.ones(n)
  pd_sorted[1:] = 1.0 - np.einsum("nf,nf->n", s[1:], w[:-1]) / (c * (c - 1) / 2)
  out = np.empty(n)
  out[order] = pd_sorted
  return out


def dkd(emb0, embr) -> np.ndarray:
  """Eq. 5: DKD = PAKD x PD over the given cases. emb0, embr: [N, F] -> [N]."""
  ur = _unit64(embr)
  k = _pakd_unit(_unit64(emb0), ur)
  return k * _pd_unit(ur, k)


def semantic_distance(emb, anchors) -> np.ndarray:
  """Eq. 25: min over anchors of the cosine distance. emb [K, F], anchors [A, F] -> [K]."""
  u, a = _unit64(emb), _unit64(anchors)
  if a.shape[0] == 0:
    raise ValueError("semantic_distance needs at least one anchor (a labeled case)")
  return (1.0 - u @ a.T).min(axis=1)
