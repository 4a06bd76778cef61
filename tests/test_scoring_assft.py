"""The scores of Eq. 1-26 against plain numpy float64 rewrites, plus invariants: the voxel
scores (scoring.kernels), Q, K and R (scoring.assft), and the float64 embedding reference
the device kernels are tested against (tests/_assft_reference.py) against Eq. 3-4's loops."""

import math

import numpy as np
import pytest
from scipy.stats import rankdata

from assft_jax.scoring import assft, kernels
from tests import _assft_reference as ref64

RTOL = 1e-5


def _probs(seed, n=4, shape=(5, 6, 7), c=4, sharp=2.0):
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(n, *shape, c)) * sharp
  p = np.exp(z - z.max(-1, keepdims=True))
  return (p / p.sum(-1, keepdims=True)).astype(np.float32)


def _cosdist(a, b):
  return 1.0 - np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))


def _pd_reference(embr, pakd):
  """Eq. 3-4 literally: rank by PAKD descending, loop over c and k."""
  order = np.argsort(-pakd, kind="stable")
  e = embr[order]
  pd = np.empty(len(e))
  pd[0] = 1.0
  for c in range(2, len(e) + 1):  # 1-based rank
    num = sum(k * _cosdist(e[c - 1], e[c - 1 - k]) for k in range(1, c))
    pd[c - 1] = num / sum(range(1, c))
  out = np.empty(len(e))
  out[order] = pd
  return out


def _masked_entropy_mean(p, tau):
  p = p.astype(np.float64)
  m = (p[..., 0] / tau < p[..., 1:].max(-1))[..., None]
  ph = p * m  # Eq. 10
  with np.errstate(divide="ignore", invalid="ignore"):
    h = -np.where(ph > 0, ph * np.log(ph), 0.0).sum(-1)  # Eq. 11, 0 log 0 = 0
  return h.reshape(len(p), -1).mean(1)


def test_temperature_endpoints_and_formula():
  assert kernels.temperature(1, 5) == 3.0
  assert kernels.temperature(5, 5) == pytest.approx(1.5, rel=1e-12)
  assert kernels.temperature(1, 1) == 3.0
  assert kernels.temperature(3, 6) == pytest.approx(-1.5 * math.log(3) / math.log(6) + 3)


@pytest.mark.parametrize("r,R", [(1, 5), (4, 5), (1, 1)])
def test_asd_matches_numpy(r, R):
  p = _probs(r + 10 * R)
  tau = -1.5 * math.log(r) / math.log(R) + 3 if R > 1 else 3.0
  np.testing.assert_allclose(
    kernels.reduce_case_stats(p, r, R)["asd"], _masked_entropy_mean(p, tau), rtol=RTOL
  )


def test_asd_refuses_round_zero():
  with pytest.raises(ValueError, match="r >= 1"):
    kernels.temperature(0, 5)


def test_unit_rows_matches_sklearn_normalize():
  from sklearn.preprocessing import normalize

  rng = np.random.default_rng(6)
  for dtype in (np.float32, np.float64):
    x = (rng.normal(size=(9, 7)) * rng.uniform(1e-3, 1e3, size=(9, 1))).astype(dtype)
    x[4] = 0.0  # a zero row stays zero (no NaN)
    got = assft.unit_rows(x)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, normalize(x.astype(np.float64)), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got[4], 0.0)


def test_confidence_matches_numpy():
  p = _probs(2, sharp=3.0)
  p[0] = 0.0
  p[0, ..., 0] = 1.0  # a case with no predicted foreground -> 0
  p64 = p.astype(np.float64)
  ref = []
  for case in p64.reshape(len(p), -1, p.shape[-1]):
    s = np.sort(case, -1)
    fg = case.argmax(-1) != 0
    ref.append((s[fg, -1] - s[fg, -2]).mean() if fg.any() else 0.0)
  got = np.asarray(kernels.reduce_case_stats(p, 1, 1)["conf"])
  assert got[0] == 0.0
  np.testing.assert_allclose(got, ref, rtol=RTOL)


def test_pakd_pd_dkd_match_numpy():
  rng = np.random.default_rng(0)
  e0 = rng.normal(size=(40, 12))
  er = e0 + 0.7 * rng.normal(size=e0.shape)
  ref_pakd = np.array([_cosdist(a, b) for a, b in zip(e0, er)])
  np.testing.assert_allclose(ref64.pakd(e0, er), ref_pakd, rtol=RTOL)
  ref_pd = _pd_reference(er, ref_pakd)
  np.testing.assert_allclose(ref64.pairwise_dissimilarity(er, ref_pakd), ref_pd, rtol=RTOL)
  np.testing.assert_allclose(ref64.dkd(e0, er), ref_pakd * ref_pd, rtol=RTOL)
  assert ref64.pairwise_dissimilarity(er, ref_pakd)[np.argmax(ref_pakd)] == 1.0


def test_pd_permutation_equivariant_and_rank_only():
  rng = np.random.default_rng(1)
  er, k = rng.normal(size=(50, 8)), rng.random(50)
  pd = ref64.pairwise_dissimilarity(er, k)
  perm = rng.permutation(50)
  np.testing.assert_allclose(ref64.pairwise_dissimilarity(er[perm], k[perm]), pd[perm], rtol=1e-12)
  # PD depends on PAKD only through its ranking.
  np.testing.assert_allclose(ref64.pairwise_dissimilarity(er, np.exp(3 * k)), pd, rtol=1e-12)


def test_dkd_zero_when_embeddings_equal():
  e = np.random.default_rng(2).normal(size=(20, 16))
  np.testing.assert_array_equal(ref64.dkd(e, e), 0.0)
  np.testing.assert_allclose(ref64.dkd(e, 2.5 * e), 0.0, atol=1e-15)  # scale-free


def test_asd_falls_as_mask_empties():
  p = _probs(3, n=1, shape=(4, 4, 4), c=3, sharp=0.3)[0].reshape(-1, 3)
  p[:, 0] *= 0.2  # every voxel inside the mask to start with
  p /= p.sum(-1, keepdims=True)
  bg = np.array([0.99, 0.005, 0.005], np.float32)  # P0/tau > P_max for tau <= 3
  vals = []
  for k in range(0, len(p) + 1, 8):
    q = p.copy()
    q[:k] = bg
    vals.append(kernels.reduce_case_stats(q.reshape(1, 4, 4, 4, 3), 1, 5)["asd"][0])
  assert np.all(np.diff(vals) < 0) and vals[-1] == 0.0
  # A larger temperature (early round) keeps at least as many voxels in the mask.
  pr = _probs(4)
  assert np.all(
    kernels.reduce_case_stats(pr, 1, 5)["asd"] >= kernels.reduce_case_stats(pr, 5, 5)["asd"]
  )


@pytest.mark.parametrize("n", [7, 300])
def test_query_score_matches_rank_formula(n):
  """With n <= 1000 and distinct values, sklearn's uniform quantile transform with
  n_quantiles = n is rank / (n - 1) exactly; min-max does not change ranks."""
  rng = np.random.default_rng(n)
  d, a = rng.random(n) * 5, rng.normal(size=n)
  ref = (rankdata(d) - 1) / (n - 1) + (rankdata(a) - 1) / (n - 1)
  np.testing.assert_allclose(assft.query_score(d, a), ref, rtol=RTOL, atol=1e-12)


def test_query_score_large_n_matches_numpy_quantiles():
  """N = 1500 > 1000 quantiles: numpy rewrite of the uniform quantile map."""
  rng = np.random.default_rng(9)
  d, a = rng.gamma(2.0, size=1500), rng.normal(size=1500)

  def qt(x):
    x = (x - x.min()) / (x.max() - x.min())
    refs = np.linspace(0, 1, 1000)
    q = np.percentile(x, refs * 100)
    return 0.5 * (np.interp(x, q, refs) - np.interp(-x, -q[::-1], -refs[::-1]))

  np.testing.assert_allclose(assft.query_score(d, a), qt(d) + qt(a), rtol=RTOL, atol=1e-9)


def test_query_score_constant_vector_is_zero_part():
  a = np.random.default_rng(0).random(10)
  q = assft.query_score(np.full(10, 0.3), a)
  np.testing.assert_allclose(q, (rankdata(a) - 1) / 9, atol=1e-12)


def test_n_candidates():
  assert assft.n_candidates(4, 0.5, 1.0, 100) == 8
  assert assft.n_candidates(3, 0.7, 1.0, 100) == math.ceil(3 / 0.7)
  assert assft.n_candidates(4, 0.9, 0.5, 100) == 4  # clamped up to N_SU
  assert assft.n_candidates(10, 0.05, 1.0, 50) == 50  # clamped to the pool
  assert assft.n_candidates(2, 0.0, 1.0, 30) == 30  # no foreground anywhere


def test_semantic_distance_and_reliability_match_numpy():
  rng = np.random.default_rng(4)
  emb, anchors = rng.normal(size=(9, 10)), rng.normal(size=(3, 10))
  ref = np.array([min(_cosdist(e, a) for a in anchors) for e in emb])
  got = ref64.semantic_distance(emb, anchors)
  np.testing.assert_allclose(got, ref, rtol=RTOL)
  conf = rng.random(9)
  np.testing.assert_allclose(assft.reliability(conf, got), conf * (1 - ref), rtol=RTOL)
