"""ASSFT's scores, Eq. 1-26 of the paper, with DESIGN.md §2's decisions.

Inputs may be numpy or JAX arrays; outputs are numpy arrays [N] unless noted.
Voxel scores (ASD, C) run through the jitted float32 kernels. The embedding scores
(PAKD, PD, DKD, D) here are float64 numpy: the documented definition and the test
reference of their float32 device kernels in `scoring.embed_kernels`, which the
strategies call (within 1e-5 relative; see that module for the rewrites float32 needs).
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.preprocessing import QuantileTransformer

from assft_jax.scoring import kernels

temperature = kernels.temperature  # Eq. 7; one definition for kernels and here.


def unit_rows(x: np.ndarray) -> np.ndarray:
  """Rows scaled to unit L2 norm: x / max(||x||, 1e-12), a zero row stays zero.

  x: [N, F] numpy, dtype kept (float32 in, float32 out). The host normaliser of the
  package (strategies, the r = 0 medoid pick); its device twin is `kernels._unit_rows_jnp`
  inside the jitted cosine blocks. DKD and D (Eq. 1-5, 25) use `_unit64` below instead.
  """
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _unit64(x) -> np.ndarray:
  """Eq. 1-5 and 25's normaliser: a validated float64 copy of x [N, F], normalised in
  place. Separate from `unit_rows`: float64 whatever the input (see the module
  docstring), and DKD and Q are kept in query records, so its summation order (einsum,
  not linalg.norm) must not move their last bits."""
  x = np.array(x, np.float64)
  if x.ndim != 2:
    raise ValueError(f"embeddings must be [N, F], got shape {x.shape}")
  x /= np.maximum(np.sqrt(np.einsum("nf,nf->n", x, x)), 1e-300)[:, None]
  return x


def asd(probs, r: int, R: int) -> np.ndarray:
  """Eq. 6-11. probs: [N, D, H, W, C] -> [N]: mean over all voxels of the entropy
  masked by [P0 / tau(r) < max_{c>=1} P_c]. Needs r >= 1 (tau(0) is undefined)."""
  temperature(r, R)  # refuses r < 1 with the rule, before any voxel work
  return np.asarray(kernels.reduce_case_stats(probs, r, R)["asd"])


def confidence(probs) -> np.ndarray:
  """Eq. 17-22. probs: [N, D, H, W, C] -> [N]: mean (p1 - p2) over voxels with
  argmax != 0; 0 for a case with no predicted foreground."""
  return np.asarray(kernels.reduce_case_stats(probs, 0, 1)["conf"])  # r-independent


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


def _minmax(x: np.ndarray) -> np.ndarray:
  lo, hi = x.min(), x.max()
  return np.zeros_like(x) if hi == lo else (x - lo) / (hi - lo)


def _quantile_uniform(x: np.ndarray) -> np.ndarray:
  qt = QuantileTransformer(
    output_distribution="uniform", n_quantiles=min(1000, x.shape[0]), subsample=None
  )
  return qt.fit_transform(x[:, None])[:, 0]


def query_score(dkd, asd) -> np.ndarray:
  """Eq. 12-16: Q = QT(minmax(DKD)) + QT(minmax(ASD)), in [0, 2]. [N], [N] -> [N].

  minmax maps a constant vector to zeros; QT is sklearn's uniform QuantileTransformer
  with n_quantiles = min(1000, N), fitted on the N cases being ranked, no subsampling.
  """
  d = np.asarray(dkd, np.float64).ravel()
  a = np.asarray(asd, np.float64).ravel()
  if d.shape != a.shape or d.size == 0:
    raise ValueError(f"dkd {d.shape} and asd {a.shape} must be equal, non-empty [N]")
  return _quantile_uniform(_minmax(d)) + _quantile_uniform(_minmax(a))


def n_candidates(n_su: int, conf_mean: float, tau_c: float, n_pool: int) -> int:
  """Eq. 24: K = ceil(N_SU tau_c / C_mean), clamped to [N_SU, n_pool].

  C_mean <= 0 (no case has predicted foreground) gives K = n_pool.
  """
  if n_pool < 1 or n_su < 0 or n_su > n_pool:
    raise ValueError(f"need 0 <= n_su <= n_pool and n_pool >= 1, got {n_su}, {n_pool}")
  if not conf_mean > 0:
    return int(n_pool)
  k = math.ceil(n_su * tau_c / conf_mean)
  return int(min(max(k, n_su), n_pool))


def semantic_distance(emb, anchors) -> np.ndarray:
  """Eq. 25: min over anchors of the cosine distance. emb [K, F], anchors [A, F] -> [K]."""
  u, a = _unit64(emb), _unit64(anchors)
  if a.shape[0] == 0:
    raise ValueError("semantic_distance needs at least one anchor (a labeled case)")
  return (1.0 - u @ a.T).min(axis=1)


def reliability(conf, dist) -> np.ndarray:
  """Eq. 26: R = C x (1 - D). [K], [K] -> [K]."""
  return np.asarray(conf, np.float64) * (1.0 - np.asarray(dist, np.float64))
