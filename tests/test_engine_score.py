"""Scoring pass: one forward gives stats, embeddings, BADGE; E(0) cache."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from assft_jax.engine import score_pass, sliding_window_predict
from assft_jax.models import SegResNetDS
from assft_jax.scoring.kernels import badge_embedding, reduce_case_stats
from tests._engine_helpers import fast_variables

C, ROI = 3, (16, 16, 16)


@pytest.fixture(scope="module")
def model():
  module = SegResNetDS(init_filters=4, out_channels=C, blocks_down=(1, 1, 1))
  return module, fast_variables(module, 16, seed=0), fast_variables(module, 16, seed=1)


@pytest.fixture(scope="module")
def volumes():
  rng = np.random.default_rng(0)
  shapes = {"a": (16, 16, 16), "b": (16, 16, 16), "big": (20, 16, 24)}
  return {k: rng.normal(size=s + (1,)).astype(np.float32) for k, s in shapes.items()}


def test_one_window_case_equals_direct_forward(model, volumes):
  module, variables, _ = model
  st = score_pass(module, variables, volumes, ["a", "b"], roi=ROI, r=2, R=5)
  x = jnp.stack([volumes["a"], volumes["b"]])
  logits, feats = module.apply(variables, x, return_features=True)
  p = jax.nn.softmax(logits, -1)
  ref = reduce_case_stats(p, 2, 5)
  assert st["ids"] == ["a", "b"]
  for k, v in ref.items():
    np.testing.assert_allclose(st[k], np.asarray(v), rtol=1e-4, atol=1e-6, err_msg=k)
  np.testing.assert_allclose(st["emb_r"], np.asarray(feats["emb"]), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
    st["badge"], np.asarray(badge_embedding(p, feats["head_in"])), rtol=1e-4, atol=1e-6
  )
  assert st["badge"].shape == (2, C * 4) and "emb_0" not in st
  assert set(st) == {"ids", "emb_r", "badge", *ref}


def test_multi_window_stats_match_blended_logits(model, volumes):
  module, variables, _ = model
  st = score_pass(module, variables, volumes, ["big"], roi=ROI, r=1, R=3, sw_batch_size=3)
  logits = sliding_window_predict(module, variables, volumes["big"], ROI)
  ref = reduce_case_stats(jax.nn.softmax(logits, -1)[None], 1, 3)
  for k, v in ref.items():
    np.testing.assert_allclose(st[k], np.asarray(v), rtol=1e-4, atol=1e-6, err_msg=k)


def test_emb0_cached_once_and_fingerprinted(model, volumes, tmp_path):
  module, variables, pre = model
  ids = ["a", "big"]
  s1 = score_pass(
    module, variables, volumes, ids, roi=ROI, r=1, R=3, emb0_variables=pre, emb0_cache=tmp_path
  )
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "big.npz"]
  enc = module.apply(pre, jnp.asarray(volumes["a"])[None], method="encode")
  np.testing.assert_allclose(
    s1["emb_0"][0], np.asarray(enc[-1].mean((1, 2, 3)))[0], rtol=1e-5, atol=1e-6
  )
  # cache only (no variables): read back
  s2 = score_pass(module, variables, volumes, ids, roi=ROI, r=1, R=3, emb0_cache=tmp_path)
  np.testing.assert_array_equal(s1["emb_0"], s2["emb_0"])
  # other pre-trained weights: the fingerprint differs, so it is recomputed, not reused
  s3 = score_pass(
    module,
    variables,
    volumes,
    ids,
    roi=ROI,
    r=1,
    R=3,
    emb0_variables=variables,
    emb0_cache=tmp_path,
  )
  assert not np.allclose(s3["emb_0"], s1["emb_0"])
