"""scoring/embed_kernels.py (Eq. 1-5, 25 in float32 on the device) against the float64
numpy reference in tests/_assft_reference.py at N = 10,000, F = 512: relative error <= 1e-5 and the
same top-N_B rankings, on random, clustered and near-duplicate embeddings."""

import jax
import numpy as np
import pytest

from assft_jax.scoring import assft, embed_kernels
from tests import _assft_reference as ref64

RTOL = 1e-5  # never loosened
N, F = 10_000, 512
TOPS = (4, 50)


def _rel(got, want):
  return float(np.max(np.abs(np.asarray(got, np.float64) / want - 1)))


def _top(x, k):
  return np.argsort(-np.asarray(x, np.float64), kind="stable")[:k]


def _ranks(pakd):
  order = np.argsort(-np.asarray(pakd, np.float64), kind="stable")
  r = np.empty(len(order), int)
  r[order] = np.arange(len(order))
  return r


def _case(name):
  """(emb0, embr) [N, F] float32, as an encoder would give them."""
  rng = np.random.default_rng(CASES.index(name))
  g = lambda *s: rng.normal(size=s)
  e0 = g(N, F)
  if name == "independent":  # PAKD ~ 1, PD ~ 1
    er = g(N, F)
  elif name == "drift":
    er = e0 + 0.3 * g(N, F)
  elif name == "relu_clusters":  # non-negative, 8 clusters: cosines 0.6-0.9, PD ~ 0.1-0.4
    centers = np.abs(g(8, F))
    e0 = np.maximum(centers[rng.integers(0, 8, N)] + 0.3 * g(N, F), 0)
    er = np.maximum(e0 + 0.1 * g(N, F), 0)
  elif name == "tight_clusters":
    e0 = np.abs(g(8, F))[rng.integers(0, 8, N)] + 0.05 * g(N, F)
    er = e0 + 0.05 * g(N, F)
  elif name == "one_cluster":  # PD ~ 2e-4: 1 - s.W/T cancels to 1e-3 relative in float32
    e0 = np.abs(g(F)) + 0.01 * g(N, F)
    er = e0 + 0.01 * g(N, F)
  elif name == "near_duplicate_pakd":  # er = e0 + 1e-3 noise: PAKD ~ 5e-7
    er = e0 + 1e-3 * g(N, F)
  elif name == "near_duplicate_cases":  # pairs of cases 1e-3 apart, in both encoders
    half = g(N // 2, F)
    e0 = np.concatenate([half, half + 1e-3 * g(N // 2, F)])
    er = e0 + 0.01 * g(N, F)
  return e0.astype(np.float32), er.astype(np.float32)


CASES = [
  "independent",
  "drift",
  "relu_clusters",
  "tight_clusters",
  "one_cluster",
  "near_duplicate_pakd",
  "near_duplicate_cases",
]


@pytest.mark.parametrize("name", CASES)
def test_pakd_pd_dkd_match_float64(name):
  """PAKD within RTOL of the float64 reference on every case. PD is ranked by PAKD, and
  PAKDs that agree to ~1e-7 can come out tied or swapped in float32 (a few dozen adjacent
  pairs of 10,000), so PD is compared given the same PAKD, and DKD: (a) on every case
  whose PAKD rank is the reference's, against the reference DKD; (b) on every case,
  against PAKD64 x PD64 ranked by the float32 PAKD, which isolates that ranking. The top
  N_B by DKD and by Q (with a random ASD) must equal the reference's."""
  e0, er = _case(name)
  k64, d64 = ref64.pakd(e0, er), ref64.dkd(e0, er)
  k32 = np.asarray(embed_kernels.pakd(e0, er))
  assert k32.dtype == np.float32 and _rel(k32, k64) <= RTOL
  pd_same_rank = ref64.pairwise_dissimilarity(er, k32)
  assert _rel(embed_kernels.pairwise_dissimilarity(er, k32), pd_same_rank) <= RTOL
  d32 = np.asarray(embed_kernels.dkd(e0, er))
  kept = _ranks(k32) == _ranks(k64)
  assert kept.mean() > 0.95, kept.mean()  # only tied neighbours move
  assert _rel(d32[kept], d64[kept]) <= RTOL
  assert _rel(d32, k64 * pd_same_rank) <= RTOL
  asd = np.random.default_rng(0).random(N)
  q32, q64 = assft.query_score(d32, asd), assft.query_score(d64, asd)
  for n_b in TOPS:
    np.testing.assert_array_equal(_top(d32, n_b), _top(d64, n_b))
    np.testing.assert_array_equal(_top(q32, n_b), _top(q64, n_b))


@pytest.mark.parametrize("name", ["drift", "tight_clusters", "near_duplicate_anchors"])
def test_semantic_distance_matches_float64(name):
  """D of 10,000 cases to 300 anchors within RTOL, and the same top N_SU by R = C (1 - D).
  near_duplicate_anchors: every case repeats an anchor up to 1e-3 noise (D ~ 5e-7), the
  cancellation a plain 1 - cos cannot resolve in float32."""
  rng = np.random.default_rng(7)
  if name == "near_duplicate_anchors":
    anchors = rng.normal(size=(300, F)).astype(np.float32)
    emb = anchors[rng.integers(0, 300, N)] + 1e-3 * rng.normal(size=(N, F))
  else:
    emb = _case(name)[1]
    emb, anchors = emb[300:], emb[:300]
  emb = np.asarray(emb, np.float32)
  d64 = ref64.semantic_distance(emb, anchors)
  d32 = np.asarray(embed_kernels.semantic_distance(emb, anchors))
  assert d32.dtype == np.float32 and _rel(d32, d64) <= RTOL
  conf = rng.random(len(emb))
  for n_su in TOPS:
    np.testing.assert_array_equal(
      _top(assft.reliability(conf, d32), n_su), _top(assft.reliability(conf, d64), n_su)
    )


def test_hand_computed_three_cases():
  """e0 = (1,0), (0,1), (1,1); er = (0,1), (0,1), (1,0). PAKD = 1 - cos = 1, 0, 1 - 1/sqrt 2.
  Ranked by PAKD: case 0, case 2, case 1. PD_0 = 1; PD_2 = cosdist((1,0), (0,1)) = 1;
  PD_1 = (1 cosdist((0,1), (1,0)) + 2 cosdist((0,1), (0,1))) / (1 + 2) = 1/3.
  DKD = 1, 0, 1 - 1/sqrt 2. D of er to anchors {(1,1)}: 1 - 1/sqrt 2 for every case."""
  e0 = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
  er = np.array([[0, 1], [0, 1], [1, 0]], np.float32)
  c = 1 - 1 / np.sqrt(2)
  np.testing.assert_allclose(embed_kernels.pakd(e0, er), [1, 0, c], rtol=RTOL, atol=1e-7)
  np.testing.assert_allclose(
    embed_kernels.pairwise_dissimilarity(er, np.array([1, 0, c])), [1, 1 / 3, 1], rtol=RTOL
  )
  np.testing.assert_allclose(embed_kernels.dkd(e0, er), [1, 0, c], rtol=RTOL, atol=1e-7)
  np.testing.assert_allclose(embed_kernels.semantic_distance(er, e0[2:]), [c] * 3, rtol=RTOL)


def test_zero_rows_and_extreme_scales_match_float64():
  """A zero embedding scores as in the reference (u = 0: PAKD 0.5, or 0 against another
  zero row; cosine distance 1 in PD and D), and rows of norm 1e-20 or 1e20, alone or
  paired with a row of another size, as unit ones (float32 squares would underflow or
  overflow without the power-of-two scaling)."""
  rng = np.random.default_rng(3)
  e0 = rng.normal(size=(200, 16)).astype(np.float32)
  er = (e0 + 0.5 * rng.normal(size=e0.shape)).astype(np.float32)
  e0[[3, 7]] = 0.0
  er[[7, 11]] = 0.0
  e0[20:40] *= np.float32(1e-20)  # rows 20-29: a pair of norms 1e-20 and 1
  er[25:40] *= np.float32(1e-20)
  e0[40:60] *= np.float32(1e20)  # rows 50-59: norms 1e20 and 1e-20
  er[50:60] *= np.float32(1e-20)
  k = ref64.pakd(e0, er)
  np.testing.assert_allclose(k[[3, 7, 11]], [0.5, 0.0, 0.5], atol=1e-15)
  k32 = np.asarray(embed_kernels.pakd(e0, er))
  np.testing.assert_allclose(k32, k, rtol=RTOL)
  # Ranked by the float32 PAKD: float64 gives rows 3 and 11 PAKDs 1 ulp apart, a float32 tie.
  pd = ref64.pairwise_dissimilarity(er, k32)
  np.testing.assert_allclose(embed_kernels.pairwise_dissimilarity(er, k32), pd, rtol=RTOL)
  np.testing.assert_allclose(embed_kernels.dkd(e0, er), k * pd, rtol=RTOL)
  anchors = er[:30].copy()
  anchors[5] = 0.0  # the anchors' norms range from 1e-20 to 10, the cases' up to 1e20
  # The anchors are cases too: D = 0, exactly here, +-4e-16 in the reference's 1 - u.u.
  np.testing.assert_allclose(
    embed_kernels.semantic_distance(er, anchors),
    ref64.semantic_distance(er, anchors),
    rtol=RTOL,
    atol=1e-15,
  )


def test_vmap_over_runs_equals_separate_calls():
  """Three seeds scored at once (a leading run axis) equal three separate calls. Stated
  tolerance 1e-6 relative: vmapping may change XLA's float32 summation order (observed
  2e-7; both are within RTOL of the float64 reference, checked above)."""
  rng = np.random.default_rng(5)
  e0 = rng.normal(size=(3, 2000, 64)).astype(np.float32)
  er = (e0 + 0.3 * rng.normal(size=e0.shape)).astype(np.float32)
  anchors = er[:, :40]
  k = jax.vmap(embed_kernels.pakd)(e0, er)
  batched = {
    "pakd": k,
    "pd": jax.vmap(embed_kernels.pairwise_dissimilarity)(er, k),
    "dkd": jax.vmap(embed_kernels.dkd)(e0, er),
    "d": jax.vmap(embed_kernels.semantic_distance)(er, anchors),
  }
  for s in range(3):
    ks = embed_kernels.pakd(e0[s], er[s])
    single = {
      "pakd": ks,
      "pd": embed_kernels.pairwise_dissimilarity(er[s], np.asarray(k[s])),
      "dkd": embed_kernels.dkd(e0[s], er[s]),
      "d": embed_kernels.semantic_distance(er[s], anchors[s]),
    }
    for name, v in single.items():
      np.testing.assert_allclose(batched[name][s], v, rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(single["dkd"], ref64.dkd(e0[s], er[s]), rtol=RTOL)


def test_shape_errors():
  x = np.zeros((4, 3), np.float32)
  with pytest.raises(ValueError, match=r"emb0 \(4, 3\) and embr \(5, 3\)"):
    embed_kernels.pakd(x, np.zeros((5, 3), np.float32))
  with pytest.raises(ValueError, match=r"pakd \(3,\) must be \[N\]"):
    embed_kernels.pairwise_dissimilarity(x, np.zeros(3, np.float32))
  with pytest.raises(ValueError, match="at least one anchor"):
    embed_kernels.semantic_distance(x, np.zeros((0, 3), np.float32))
  with pytest.raises(ValueError, match=r"\[K, F\], \[A, F\]"):
    embed_kernels.semantic_distance(x, np.zeros((2, 5), np.float32))
