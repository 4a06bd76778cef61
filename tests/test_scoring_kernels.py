"""kernels.py against plain numpy float64 rewrites of each voxel map and reduction."""

import math

import numpy as np
import pytest

from assft_jax.scoring import kernels

RTOL = 1e-5


def _probs(seed, n=3, shape=(6, 7, 8), c=4, sharp=1.0):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(n, *shape, c)) * sharp
  p = np.exp(logits - logits.max(-1, keepdims=True))
  return (p / p.sum(-1, keepdims=True)).astype(np.float32)


def _entropy64(p):
  p = p.astype(np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    return -np.where(p > 0, p * np.log(p), 0.0).sum(-1)


def _first_peak_u64(h, c, bins=100):
  """UGTST u, written as a plain scan over np.histogram counts."""
  counts, edges = np.histogram(h, bins=bins, range=(0.0, math.log(c)))
  for i in range(bins):
    left = counts[i - 1] if i > 0 else -1
    right = counts[i + 1] if i < bins - 1 else -1
    if counts[i] > 0 and counts[i] >= left and counts[i] > right:
      break
  above = h[h > edges[i + 1]]
  return above.mean() if above.size else 0.0


def _reference(p, tau):
  p64 = p.astype(np.float64)
  n = p.shape[0]
  h = _entropy64(p)
  srt = np.sort(p64, -1)
  marg = srt[..., -1] - srt[..., -2]
  fg = p64.argmax(-1) != 0
  out = {
    "entropy": h.reshape(n, -1).mean(1),
    "lc": (1 - p64.max(-1)).reshape(n, -1).mean(1),
    "margin": marg.reshape(n, -1).mean(1),
    "fg_frac": fg.reshape(n, -1).mean(1),
    "usum": h.reshape(n, -1).sum(1),
  }
  for key, t in (("asd", tau), ("asd_tau1", 1.0)):
    m = (p64[..., 0] / t < p64[..., 1:].max(-1)).astype(np.float64)
    out[key] = _entropy64(p64 * m[..., None]).reshape(n, -1).mean(1)  # Eq. 10-11 literally
  fgm = np.where(fg, marg, 0.0).reshape(n, -1)
  nfg = fg.reshape(n, -1).sum(1)
  out["conf"] = np.where(nfg > 0, fgm.sum(1) / np.maximum(nfg, 1), 0.0)
  out["ugtst"] = np.array([_first_peak_u64(h[i].ravel(), p.shape[-1]) for i in range(n)])
  return out


@pytest.mark.parametrize(
  "seed,c,sharp,r,R", [(0, 4, 1.0, 1, 5), (1, 2, 3.0, 3, 5), (2, 6, 2.0, 5, 5), (3, 3, 4.0, 1, 1)]
)
def test_reduce_case_stats_matches_numpy(seed, c, sharp, r, R):
  p = _probs(seed, c=c, sharp=sharp)
  got = {k: np.asarray(v) for k, v in kernels.reduce_case_stats(p, r, R).items()}
  ref = _reference(p, kernels.temperature(r, R))
  assert set(got) == set(kernels.STAT_KEYS)
  for k in kernels.STAT_KEYS:
    np.testing.assert_allclose(got[k], ref[k], rtol=RTOL, atol=1e-7, err_msg=k)


def test_reduce_case_stats_at_round_zero_leaves_out_asd():
  """r = 0 (the init, tau(0) undefined): every r-independent key, against numpy; no asd."""
  p = _probs(4, c=3, sharp=2.0)
  got = {k: np.asarray(v) for k, v in kernels.reduce_case_stats(p, 0, 5).items()}
  assert set(got) == set(kernels.STAT_KEYS) - {"asd"}
  ref = _reference(p, 1.0)
  for k in got:
    np.testing.assert_allclose(got[k], ref[k], rtol=RTOL, atol=1e-7, err_msg=k)
  for r, R in ((-1, 5), (0, 0)):
    with pytest.raises(ValueError, match="r >= 0 and R >= 1"):
      kernels.reduce_case_stats(p, r, R)


def test_conf_is_zero_without_foreground_and_ugtst_finite():
  p = np.zeros((2, 4, 4, 4, 3), np.float32)
  p[..., 0] = 0.9
  p[..., 1:] = 0.05
  s = kernels.reduce_case_stats(p, 1, 3)
  np.testing.assert_array_equal(np.asarray(s["conf"]), 0.0)
  np.testing.assert_array_equal(np.asarray(s["fg_frac"]), 0.0)
  assert np.isfinite(np.asarray(s["ugtst"])).all()


def test_uncertainty_matches_skactiveml_voxelwise():
  """Per voxel, our entropy / 1 - max / margin equal scikit-activeml's
  uncertainty_scores (entropy, least_confident, and 1 - margin for margin_sampling)."""
  from skactiveml.pool import uncertainty_scores as us

  p = _probs(5, n=1, shape=(5, 5, 5), c=5)[0]
  flat = p.reshape(-1, 5).astype(np.float64)
  np.testing.assert_allclose(
    np.asarray(kernels.entropy_map(p)).ravel(), us(flat, method="entropy"), rtol=RTOL
  )
  np.testing.assert_allclose(
    np.asarray(kernels.least_confidence_map(p)).ravel(),
    us(flat, method="least_confident"),
    rtol=RTOL,
    atol=1e-7,
  )
  np.testing.assert_allclose(
    1 - np.asarray(kernels.margin_map(p)).ravel(), us(flat, method="margin_sampling"), rtol=RTOL
  )


def test_badge_embedding_matches_numpy():
  rng = np.random.default_rng(7)
  p = _probs(7, n=2, shape=(3, 4, 5), c=3)
  h = rng.normal(size=(2, 3, 4, 5, 6)).astype(np.float32)
  onehot = np.eye(3)[p.argmax(-1)]
  ref = np.stack(
    [
      np.mean(
        [
          np.outer(
            onehot[i].reshape(-1, 3)[v] - p[i].reshape(-1, 3)[v], h[i].reshape(-1, 6)[v]
          ).ravel()
          for v in range(60)
        ],
        0,
      )
      for i in range(2)
    ]
  )
  np.testing.assert_allclose(np.asarray(kernels.badge_embedding(p, h)), ref, rtol=1e-5, atol=1e-6)


def test_cosine_distance_blockwise_matches_numpy():
  rng = np.random.default_rng(3)
  a, b = rng.normal(size=(37, 16)), rng.normal(size=(11, 16))
  ref = (
    1
    - (a / np.linalg.norm(a, axis=1, keepdims=True))
    @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T
  )
  np.testing.assert_allclose(
    kernels.cosine_distance_matrix(a, b, block=8), ref, rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(
    kernels.min_cosine_distance(a, b, block=8), ref.min(1), rtol=1e-5, atol=1e-6
  )


def test_temperature_bad_rounds():
  with pytest.raises(ValueError, match="r >= 1"):
    kernels.temperature(0, 5)
