"""Jitted voxel maps and per-case reductions over softmax outputs; blockwise embedding maths.

Conventions:
  probs: [N, D, H, W, C] float32, softmax over C, class 0 = background.
  Voxel maps are per case [D, H, W] and are vmapped over N; reductions give [N].
  Entropies use the natural log and 0·log 0 = 0 (`jax.scipy.special.entr`).

The engine's scoring pass calls `reduce_case_stats` on one case or a small batch at a
time, so nothing here needs the whole pool in memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import entr

UGTST_BINS = 100


def temperature(r: int, R: int) -> float:
  """Eq. 7: tau(r) = 3 - 1.5 log r / log R; tau = 3 when R = 1 (log R = 0 there)."""
  if int(R) < 1 or int(r) < 1:
    raise ValueError(f"temperature needs rounds r >= 1 and R >= 1, got r={r}, R={R}")
  if int(R) == 1:
    return 3.0
  return 3.0 - 1.5 * math.log(r) / math.log(R)


# ---- voxel maps: one case, p: [D, H, W, C] -> [D, H, W] -------------------------------


def entropy_map(p: jax.Array) -> jax.Array:
  """-sum_c p_c log p_c per voxel."""
  return entr(p).sum(-1)


def least_confidence_map(p: jax.Array) -> jax.Array:
  """1 - max_c p_c per voxel."""
  return 1.0 - p.max(-1)


def margin_map(p: jax.Array) -> jax.Array:
  """p1 - p2 (largest minus second-largest class probability) per voxel.

  p2 = the max after masking the argmax class (a tie at the top gives 0). This is
  several times faster on XLA:CPU than lax.top_k over a short class axis.
  """
  first = jnp.argmax(p, -1)[..., None] == jnp.arange(p.shape[-1])
  return p.max(-1) - jnp.where(first, -1.0, p).max(-1)


def foreground_mask(p: jax.Array) -> jax.Array:
  """Eq. 19: [argmax_c p_c != 0] as bool."""
  return jnp.argmax(p, -1) != 0


def asd_mask(p: jax.Array, tau: jax.Array | float) -> jax.Array:
  """Eq. 6-9: [P0 / tau < max_{c>=1} P_c] as bool."""
  return p[..., 0] / tau < p[..., 1:].max(-1)


# ---- UGTST threshold ------------------------------------------------------------------


def first_peak_threshold(h: jax.Array, h_max: float, bins: int = UGTST_BINS) -> jax.Array:
  """UGTST threshold t of one entropy map h: [D, H, W] (scalar).

  Histogram: `bins` equal-width bins on the fixed range [0, h_max] (h_max = log C, the
  largest possible entropy, so cases are comparable). First peak: the lowest-index bin i
  with count[i] > 0, count[i] >= count[i-1] and count[i] > count[i+1] (out-of-range
  neighbours count as -1), i.e. the right end of the first local-maximum plateau
  scanned from low entropy. Such a bin always exists (the right end of the global
  maximum's plateau qualifies). t = the upper edge of that bin = (i + 1) h_max / bins.
  """
  idx = jnp.clip(jnp.floor(h.ravel() / h_max * bins).astype(jnp.int32), 0, bins - 1)
  counts = jnp.zeros(bins, jnp.int32).at[idx].add(1)
  pad = jnp.array([-1], jnp.int32)
  left = jnp.concatenate([pad, counts[:-1]])
  right = jnp.concatenate([counts[1:], pad])
  peak = (counts > 0) & (counts >= left) & (counts > right)
  i = jnp.argmax(peak)  # first True
  return (i + 1).astype(h.dtype) * (h_max / bins)


def ugtst_score(h: jax.Array, h_max: float) -> jax.Array:
  """u = mean(H[H > t]) with t = `first_peak_threshold`; 0 if no voxel exceeds t."""
  t = first_peak_threshold(h, h_max)
  above = h > t
  n = above.sum()
  return jnp.where(n > 0, jnp.where(above, h, 0.0).sum() / jnp.maximum(n, 1), 0.0)


# ---- per-case reductions ---------------------------------------------------------------


def _case_stats(p: jax.Array, tau: jax.Array) -> dict[str, jax.Array]:
  """All per-case scalars of one case p: [D, H, W, C]; the entropy map is built once."""
  h = entropy_map(p)
  fg = foreground_mask(p)
  n_fg = fg.sum()
  fg_margin = jnp.where(fg, margin_map(p), 0.0).sum()
  return {
    "entropy": h.mean(),
    "lc": least_confidence_map(p).mean(),
    "margin": margin_map(p).mean(),
    "asd": jnp.where(asd_mask(p, tau), h, 0.0).mean(),  # M * H = Eq. 10-11's masked entropy
    "asd_tau1": jnp.where(asd_mask(p, 1.0), h, 0.0).mean(),
    "conf": jnp.where(n_fg > 0, fg_margin / jnp.maximum(n_fg, 1), 0.0),
    "fg_frac": fg.mean(),
    "ugtst": ugtst_score(h, math.log(p.shape[-1])),
    "usum": h.sum(),
  }


_reduce = jax.jit(jax.vmap(_case_stats, in_axes=(0, None)))

STAT_KEYS = ("entropy", "lc", "margin", "asd", "asd_tau1", "conf", "fg_frac", "ugtst", "usum")


def reduce_case_stats(probs: jax.Array, r: int, R: int) -> dict[str, jax.Array]:
  """The scoring pass's per-case statistics.

  probs: [N, D, H, W, C] float32 softmax (C >= 2). r, R: the current round (>= 0) and
  the number of rounds (>= 1); they only set the ASD temperature (passed as a traced
  scalar, so rounds do not recompile). Returns {key: [N] float32} for `STAT_KEYS`:
  entropy (mean voxel entropy), lc (mean 1 - max p), margin (mean p1 - p2),
  asd (mean masked entropy at tau(r)), asd_tau1 (tau = 1), conf (mean margin over
  argmax != 0 voxels, 0 if none), fg_frac (fraction of argmax != 0 voxels),
  ugtst (see `ugtst_score`), usum (summed voxel entropy).
  At r = 0 (the one-shot init, before any query round) tau(r) is undefined (Eq. 7 has
  log r), so "asd" is left out and every other key is returned.
  """
  probs = jnp.asarray(probs, jnp.float32)
  if probs.ndim != 5 or probs.shape[-1] < 2:
    raise ValueError(f"probs must be [N, D, H, W, C>=2], got shape {probs.shape}")
  if int(r) < 0 or int(R) < 1:
    raise ValueError(f"reduce_case_stats needs rounds r >= 0 and R >= 1, got r={r}, R={R}")
  if int(r) == 0:
    stats = _reduce(probs, jnp.float32(1.0))  # any tau: its only output is dropped
    return {k: v for k, v in stats.items() if k != "asd"}
  return _reduce(probs, jnp.float32(temperature(r, R)))


@jax.jit
def badge_embedding(probs: jax.Array, head_in: jax.Array) -> jax.Array:
  """BADGE gradient embedding per case: mean over voxels of (onehot(argmax p) - p) ⊗ h.

  probs: [N, D, H, W, C]; head_in: [N, D, H, W, G], the input of the final 1x1x1 head
  (its last-layer gradient w.r.t. the head weights is this outer product, up to sign).
  Returns [N, C * G] float32.
  """
  n, c = probs.shape[0], probs.shape[-1]
  g = jax.nn.one_hot(jnp.argmax(probs, -1), c, dtype=probs.dtype) - probs
  v = math.prod(probs.shape[1:-1])
  return jnp.einsum("nxyzc,nxyzg->ncg", g, head_in).reshape(n, -1) / v


# ---- embedding maths (blockwise) -------------------------------------------------------


def _unit_rows_jnp(x: jax.Array) -> jax.Array:
  """Device twin of `scoring.assft.unit_rows` (same formula), traced inside the jitted
  cosine blocks so the normalisation runs where the matmul does."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@jax.jit
def _cos_block(a: jax.Array, b_unit: jax.Array) -> jax.Array:
  return 1.0 - _unit_rows_jnp(a) @ b_unit.T


def _blockwise(a, b, block: int, reduce: Callable[[jax.Array], jax.Array]) -> np.ndarray:
  a = np.asarray(a, np.float32)
  bu = _unit_rows_jnp(jnp.asarray(b, jnp.float32))
  out = []
  for s in range(0, a.shape[0], block):  # fixed block shape -> one compile
    blk = a[s : s + block]
    pad = block - blk.shape[0]
    d = reduce(_cos_block(jnp.asarray(np.pad(blk, ((0, pad), (0, 0)))), bu))
    out.append(np.asarray(d)[: blk.shape[0]])
  return np.concatenate(out, 0)


def cosine_distance_matrix(a, b, block: int = 1024) -> np.ndarray:
  """1 - cos(a_i, b_j): a [N, F], b [M, F] -> [N, M] float32, computed `block` rows at a
  time (N = M = 10,000 at F = 512 needs 400 MB for the result, 4 MB per block input)."""
  return _blockwise(a, b, block, lambda d: d)


def min_cosine_distance(a, b, block: int = 1024) -> np.ndarray:
  """min_j (1 - cos(a_i, b_j)): [N] float32, never materialising [N, M]."""
  return _blockwise(a, b, block, lambda d: d.min(-1))
