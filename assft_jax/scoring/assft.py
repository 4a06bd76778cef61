"""ASSFT's host-side scores: the query criterion Q (Eq. 12-16), the candidate count K
(Eq. 24) and the reliability R (Eq. 26), plus the host row normaliser.

The voxel scores (ASD, C: Eq. 6-11, 17-22) are `scoring.kernels.reduce_case_stats`, and
the embedding scores (PAKD, PD, DKD, D: Eq. 1-5, 25) the float32 device kernels of
`scoring.embed_kernels`. Inputs may be numpy or JAX arrays; outputs are numpy [N].
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.preprocessing import QuantileTransformer


def unit_rows(x: np.ndarray) -> np.ndarray:
  """Rows scaled to unit L2 norm: x / max(||x||, 1e-12), a zero row stays zero.

  x: [N, F] numpy, dtype kept (float32 in, float32 out). The host normaliser of the
  package (strategies, the r = 0 medoid pick); its device twin is `kernels._unit_rows_jnp`
  inside the jitted cosine blocks; `embed_kernels` scales rows exactly by powers of two.
  """
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


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


def reliability(conf, dist) -> np.ndarray:
  """Eq. 26: R = C x (1 - D). [K], [K] -> [K]."""
  return np.asarray(conf, np.float64) * (1.0 - np.asarray(dist, np.float64))
