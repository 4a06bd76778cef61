"""PAKD, PD, DKD and D (Eq. 1-5, 25) as jitted float32 device kernels.

The float64 numpy functions in `scoring.assft` are the definition and the test reference;
the strategies call these. Every kernel takes one run's arrays ([N, F] embeddings) and is
vmappable over a leading axis of independent runs, e.g. the seeds of a sweep scored at once:
`jax.vmap(embed_kernels.dkd)(emb0 [S, N, F], embr [S, N, F]) -> [S, N]`.

float32 keeps relative error <= 1e-5 (tests/test_scoring_embed_kernels.py, N = 10,000,
F = 512) through three algebraically exact rewrites, each against a measured failure of
the plain float32 form:
- a pair's cosine distance (PAKD, D) is |v|^2 / (2 |b|^2) with v = a (|b| - |a|) / |a| - (b - a)
  (= |b| (u_a - u_b)), |b| - |a| = (2 a.(b - a) + |b - a|^2) / (|a| + |b|), a the row of
  smaller norm: nearly equal rows then keep relative precision, because b - a is formed
  from the raw values (exactly, where they agree to a factor of 2). |u0 - ur|^2 / 2 of
  float32 unit vectors is 1.3e-5 off at PAKD ~ 5e-7 (er = e0 + 1e-3 noise);
- PD sums |s_c - s_j|^2 / 2 around the pool's mean direction mu (t = s - mu):
  PD_c = (T_c |t_c|^2 - 2 t_c . W_c + Q_c) / (2 T_c), T_c = c (c - 1) / 2, with the same
  double cumulative sums as `assft._pd_unit` (W_c of t, Q_c of |t|^2). The sums cancel
  only down to the pool's spread, not down to 1: 1 - s_c . W_c / T_c is 2e-5 off on
  tight clusters (PD ~ 6e-3);
- rows are scaled by an exact power of two before any square, so float32's range
  is not a limit (1e-20 or 1e20 embeddings are scored like unit ones).
What float32 cannot give: PD depends on the PAKD ranking, and PAKDs that agree to ~1e-7
(adjacent ranks of a dense pool) may come out tied or swapped. Such a pair's PD is then
the PD of the swapped order: 20-90 of 10,000 cases moved in the tests, their DKD up to
9e-5 from the reference's; every other case, and every top-4 and top-50, agrees.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_REFINE = 4  # D: anchors re-measured exactly per case (those nearest by the matmul)
_BLOCK = 1024  # D: cases per block, so [block, A] cosines is the largest temporary


def _pow2(x: jax.Array, e: jax.Array) -> jax.Array:
  """x [..., F] times 2^-e (e [...], one per row): exact, so every cosine is unchanged."""
  # ldexp on the [...] factors: on every value of x it costs several times more (XLA:CPU)
  return x * jnp.ldexp(jnp.ones(e.shape, x.dtype), -e)[..., None]


def _exponent(x: jax.Array) -> jax.Array:
  """Per row of x [..., F], the e with max|x| / 2^e in [0.5, 1) (0 for a zero row): after
  scaling, no square over- or underflows."""
  return jnp.frexp(jnp.abs(x).max(-1))[1]


def _dot(x: jax.Array, y: jax.Array) -> jax.Array:
  """Row-wise dot product [..., F] x [..., F] -> [...]."""
  return (x * y).sum(-1)


def _rowmax(x: jax.Array) -> jax.Array:
  return jnp.abs(x).max(-1)


def _unit(x: jax.Array) -> jax.Array:
  """Rows of x [..., F] scaled to unit norm, a zero row stays zero (as `assft._unit64`)."""
  x = _pow2(x, _exponent(x))
  n = jnp.sqrt(_dot(x, x))
  return x / jnp.where(n > 0, n, 1.0)[..., None]


def _cosdist(a: jax.Array, b: jax.Array) -> jax.Array:
  """|u_a - u_b|^2 / 2 = 1 - cos(a, b) per row pair: a, b [..., F] -> [...] float32.

  The difference form of the module docstring. A zero row has u = 0, as in the reference:
  0.5 against a non-zero row, 0 against another zero row.
  """
  ea, eb = _exponent(a), _exponent(b)
  # One factor for rows of about the same size, so that b - a stays exact; rows 2^16
  # apart are no near-duplicates and are scaled apart (one factor would flush the smaller).
  near = jnp.abs(ea - eb) <= 16
  a = _pow2(a, jnp.where(near, jnp.maximum(ea, eb), ea))
  b = _pow2(b, jnp.where(near, jnp.maximum(ea, eb), eb))
  na2, nb2 = _dot(a, a), _dot(b, b)
  swap = (na2 > nb2)[..., None]
  a, b = jnp.where(swap, b, a), jnp.where(swap, a, b)
  na, nb = jnp.sqrt(jnp.minimum(na2, nb2)), jnp.sqrt(jnp.maximum(na2, nb2))
  delta = b - a
  grow = 2 * _dot(a, delta) + _dot(delta, delta)
  k = grow / jnp.where(na > 0, na * (na + nb), 1.0)  # (|b| - |a|) / |a|
  v = a * k[..., None] - delta
  d = _dot(v, v) / (2 * jnp.where(nb > 0, nb * nb, 1.0))
  return jnp.where(na > 0, d, jnp.where(nb > 0, 0.5, 0.0))


def _check_pair(emb0: jax.Array, embr: jax.Array) -> None:
  if emb0.ndim != 2 or emb0.shape != embr.shape:
    raise ValueError(f"emb0 {emb0.shape} and embr {embr.shape} must both be [N, F]")


@jax.jit
def pakd(emb0: jax.Array, embr: jax.Array) -> jax.Array:
  """Eq. 1-2: 1 - cos(E0(x), Er(x)). emb0, embr: [N, F] -> [N] float32."""
  _check_pair(emb0, embr)
  return _cosdist(jnp.asarray(emb0, jnp.float32), jnp.asarray(embr, jnp.float32))


def _pd_sorted(s: jax.Array) -> jax.Array:
  """Eq. 3-4 on unit (or zero) rows s [N, F] already in PAKD-descending order -> [N].

  0-based rank i: PD_i = sum_{j<i} (i - j)(1 - s_i . s_j) / T_i, T_i = i (i + 1) / 2.
  1 - s_i . s_j = |t_i - t_j|^2 / 2 + (z_i + z_j) / 2 with t = s - mean(s) and z = 1 for
  a zero row (its |s|^2 is 0, not 1), else 0; the (i - j)-weighted sums over j < i are
  double cumulative sums taken at i - 1.
  """
  n = s.shape[0]
  t = s - s.mean(0)
  tt = _dot(t, t)
  z = (_dot(s, s) == 0).astype(s.dtype)
  w = jnp.cumsum(jnp.cumsum(t, 0), 0)[:-1]  # row i - 1: sum_{j<i} (i - j) t_j
  q = jnp.cumsum(jnp.cumsum(tt))[:-1]
  zs = jnp.cumsum(jnp.cumsum(z))[:-1]
  i = jnp.arange(1, n, dtype=s.dtype)
  tri = i * (i + 1) / 2
  sq = tri * tt[1:] - 2 * _dot(t[1:], w) + q
  rest = (sq + tri * z[1:] + zs) / (2 * tri)
  return jnp.concatenate([jnp.ones((min(n, 1),), s.dtype), rest])


@jax.jit
def pairwise_dissimilarity(embr: jax.Array, pakd: jax.Array) -> jax.Array:
  """Eq. 3-4. embr: [N, F], pakd: [N] -> PD [N] float32 in the input order.

  Cases are ranked by PAKD descending (stable: ties keep input order) as in
  `assft.pairwise_dissimilarity`; PD of the first is 1.
  """
  if embr.ndim != 2 or pakd.shape != embr.shape[:1]:
    raise ValueError(f"pakd {pakd.shape} must be [N] for embr {embr.shape} [N, F]")
  order = jnp.argsort(-jnp.asarray(pakd, jnp.float32), stable=True)
  pd = _pd_sorted(_unit(jnp.asarray(embr, jnp.float32))[order])
  return jnp.empty_like(pd).at[order].set(pd)


@jax.jit
def dkd(emb0: jax.Array, embr: jax.Array) -> jax.Array:
  """Eq. 5: DKD = PAKD x PD over the given cases. emb0, embr: [N, F] -> [N] float32."""
  k = pakd(emb0, embr)
  return k * pairwise_dissimilarity(embr, k)


@jax.jit
def semantic_distance(emb: jax.Array, anchors: jax.Array) -> jax.Array:
  """Eq. 25: min over anchors of 1 - cos. emb [K, F], anchors [A, F] -> [K] float32.

  A matmul of unit rows, centred on the anchors' mean, finds each case's `_REFINE` nearest
  anchors (uncentred, float32 misses the nearest on a tight cluster, D ~ 2e-4, off by
  2e-3); those are re-measured with the difference form, so a case that nearly repeats an
  anchor keeps its precision.
  `_BLOCK` cases at a time. As in the reference, a zero row is at distance 1 from all.
  """
  if emb.ndim != 2 or anchors.ndim != 2 or emb.shape[1] != anchors.shape[1]:
    raise ValueError(f"emb {emb.shape} and anchors {anchors.shape} must be [K, F], [A, F]")
  if anchors.shape[0] == 0:
    raise ValueError("semantic_distance needs at least one anchor (a labeled case)")
  emb, anchors = jnp.asarray(emb, jnp.float32), jnp.asarray(anchors, jnp.float32)
  ua = _unit(anchors)
  mu = ua.mean(0)
  ta = ua - mu  # around the anchors' mean, so the matmul errs relative to their spread
  ta2 = _dot(ta, ta)
  zero_a = _rowmax(anchors) == 0
  k = min(_REFINE, anchors.shape[0])

  def one(x: jax.Array) -> jax.Array:
    # |t_x - t_a|^2 = |t_x|^2 + |t_a|^2 - 2 t_x . t_a: the nearest anchors have the largest
    # 2 t_x . t_a - |t_a|^2.
    _, near = jax.lax.top_k(2 * (ta @ (_unit(x) - mu)) - ta2, k)
    d = _cosdist(jnp.broadcast_to(x, (k, x.shape[0])), anchors[near])
    d = jnp.where(zero_a[near] | (_rowmax(x) == 0), 1.0, d)
    return d.min()

  return jax.lax.map(one, emb, batch_size=_BLOCK)
