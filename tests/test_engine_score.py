"""Scoring pass: one forward gives stats, embeddings, BADGE; E(0) cache."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from assft_jax.engine import (
  evaluate,
  predict_labels,
  score,
  score_pass,
  sliding_window_predict,
)
from assft_jax.models import SegResNetDS
from assft_jax.scoring.kernels import badge_embedding, reduce_case_stats
from tests._engine_helpers import fast_variables

C, ROI = 3, (16, 16, 16)


class Volume:  # a volume as `data.Volume` has it (image, label or None, meta)
  def __init__(self, image, label, meta):
    self.image, self.label, self.meta = image, label, meta


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
  assert set(st) == {"ids", "emb_r", "badge", "dice_gt", *ref}
  assert np.isnan(st["dice_gt"]).all()  # bare images: no label to score against


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
  # the same encoder under another decoder (another seed's F(0)): the same key, so reused
  other_decoder = {c: {**variables[c], "encoder": pre[c]["encoder"]} for c in pre}
  sw = dict(roi=ROI, overlap=0.5)
  assert score._emb0_cache(module, other_decoder, None, sw).key == (
    score._emb0_cache(module, pre, None, sw).key
  )


def test_emb0_recomputed_when_the_image_under_an_id_changes(model, volumes, tmp_path):
  """Same weights, roi and id, another preprocessed volume (e.g. a new crop): the cached
  embedding must not be served."""
  module, variables, pre = model
  kw = dict(roi=ROI, r=1, R=3, emb0_variables=pre, emb0_cache=tmp_path)
  s1 = score_pass(module, variables, {"a": volumes["a"]}, ["a"], **kw)
  s2 = score_pass(module, variables, {"a": volumes["b"]}, ["a"], **kw)  # "a" now holds b
  direct = module.apply(pre, jnp.asarray(volumes["b"])[None], method="encode")[-1]
  np.testing.assert_allclose(s2["emb_0"][0], np.asarray(direct.mean((1, 2, 3)))[0], rtol=1e-5)
  assert not np.allclose(s1["emb_0"], s2["emb_0"])
  # the new entry replaced the old one, and the cache-only path checks the image too
  s3 = score_pass(
    module, variables, {"a": volumes["b"]}, ["a"], roi=ROI, r=1, R=3, emb0_cache=tmp_path
  )
  np.testing.assert_array_equal(s3["emb_0"], s2["emb_0"])
  with pytest.raises(ValueError, match="no cached E\\(0\\) embedding"):
    score_pass(
      module, variables, {"a": volumes["a"]}, ["a"], roi=ROI, r=1, R=3, emb0_cache=tmp_path
    )


def test_dice_gt_equals_evaluate_per_case(model, volumes):
  """dice_gt against engine.evaluate's per-case mean on the same cases and model.

  Labels: "a" and "big" are the model's own argmax with a third of the voxels redrawn
  (a Dice strictly between 0 and 1); "zero" is an all-zero image, on which this network
  (zero biases, BN at mean 0 / var 1) gives logits 0, so argmax 0 everywhere, and its
  label holds class 1 only: class 1 has Dice 2*0 / (0 + |G|) = 0 and class 2 is absent
  from both, left out, so the case's Dice is 0 (NaN if class 2 were counted as 1 or the
  NaN kept). "empty": label all background, no class left: NaN (evaluate: None)."""
  module, variables, _ = model
  rng = np.random.default_rng(2)
  images = {**volumes, "zero": np.zeros((16, 16, 16, 1), np.float32)}
  images["empty"] = images["zero"]
  pred = predict_labels(module, variables, images, ["a", "big", "zero"], roi=ROI)
  assert not pred["zero"].any()
  noisy = {
    k: np.where(rng.random(pred[k].shape) < 1 / 3, rng.integers(0, C, pred[k].shape), pred[k])
    for k in ("a", "big")
  }
  one = np.zeros((16, 16, 16), np.int32)
  one[4:9, 4:9, 4:9] = 1
  labels = {**noisy, "zero": one, "empty": np.zeros((16, 16, 16), np.int32), "b": None}
  vols = {k: Volume(images[k], labels[k], {}) for k in labels}
  ids = ["a", "big", "zero", "empty", "b"]
  st = score_pass(module, variables, vols, ids, roi=ROI, r=1, R=3)
  ref = evaluate(module, variables, vols, ids[:4], roi=ROI, num_classes=C)["per_case"]
  for i, cid in enumerate(ids[:3]):
    np.testing.assert_allclose(st["dice_gt"][i], ref[cid]["mean"], rtol=1e-12, err_msg=cid)
  assert 0.2 < st["dice_gt"][0] < 0.95 and st["dice_gt"][2] == 0.0
  assert ref["empty"]["mean"] is None and np.isnan(st["dice_gt"][3])
  assert np.isnan(st["dice_gt"][4])  # no label
