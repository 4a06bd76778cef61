"""Dice+CE loss against a plain numpy rewrite; deep supervision; hard Dice vs sklearn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import f1_score

from assft_jax.engine.losses import dice_ce_loss, hard_dice, nearest_exact_resize
from tests._engine_helpers import np_deep_supervision_loss, np_dice_ce


@pytest.mark.parametrize("ignore", [None, 255])
def test_loss_and_metrics_match_numpy(ignore):
  rng = np.random.default_rng(0)
  C = 4
  logits = rng.normal(size=(2, 6, 5, 7, C)).astype(np.float32) * 3
  labels = rng.integers(0, C, size=(2, 6, 5, 7)).astype(np.int32)
  if ignore is not None:
    labels[rng.random(labels.shape) < 0.3] = ignore
  loss, m = dice_ce_loss(jnp.asarray(logits), jnp.asarray(labels), C, ignore_index=ignore)
  ref_dice, ref_ce = np_dice_ce(logits, labels, C, ignore)
  np.testing.assert_allclose(float(loss), ref_dice + ref_ce, rtol=1e-5)
  np.testing.assert_allclose(float(m["loss"]), ref_dice + ref_ce, rtol=1e-5)
  np.testing.assert_allclose(float(m["dice_loss"]), ref_dice, rtol=1e-5)
  np.testing.assert_allclose(float(m["ce"]), ref_ce, rtol=1e-5)


def test_deep_supervision_weights_and_nearest_exact():
  rng = np.random.default_rng(1)
  C = 3
  labels = rng.integers(0, C, size=(1, 8, 8, 8)).astype(np.int32)
  outs = [
    rng.normal(size=(1, 8 // 2**i, 8 // 2**i, 8 // 2**i, C)).astype(np.float32) for i in range(3)
  ]
  loss, _ = dice_ce_loss([jnp.asarray(o) for o in outs], jnp.asarray(labels), C)
  # torch "nearest-exact" 2x down picks voxel 2d+1, 4x down picks 4d+2; weights 1, 1/2, 1/4
  lv = [labels, labels[:, 1::2, 1::2, 1::2], labels[:, 2::4, 2::4, 2::4]]
  w = np.array([1, 0.5, 0.25]) / 1.75
  ref = sum(wi * sum(np_dice_ce(o, y, C)) for wi, o, y in zip(w, outs, lv))
  np.testing.assert_allclose(float(loss), ref, rtol=1e-5)
  # the helper the train-step test uses is the same reference
  np.testing.assert_allclose(np_deep_supervision_loss(outs, labels, C), ref, rtol=1e-12)


def test_nearest_exact_matches_torch():
  import torch

  lab = np.random.default_rng(2).integers(0, 5, size=(1, 12, 10, 9)).astype(np.int32)
  got = np.asarray(nearest_exact_resize(jnp.asarray(lab), (6, 5, 3)))
  ref = torch.nn.functional.interpolate(
    torch.from_numpy(lab[:, None].astype(np.float32)), size=(6, 5, 3), mode="nearest-exact"
  )
  np.testing.assert_array_equal(got, ref[:, 0].numpy().astype(np.int32))


def test_gradients_finite():
  rng = np.random.default_rng(3)
  C = 3
  logits = jnp.asarray(rng.normal(size=(2, 4, 4, 4, C)).astype(np.float32))
  labels = jnp.asarray(rng.integers(0, C, size=(2, 4, 4, 4)).astype(np.int32))
  g = jax.grad(lambda x: dice_ce_loss(x, labels, C)[0])(logits)
  assert np.all(np.isfinite(np.asarray(g))) and float(jnp.abs(g).sum()) > 0


def _sklearn_hard_dice(pred, labels, C, ignore=None):
  """Mean sklearn F1 (= Dice) over the foreground classes present in labels or pred."""
  keep = np.ones(labels.shape, bool) if ignore is None else labels != ignore
  p, g = pred[keep], labels[keep]
  scores = [
    f1_score(g == c, p == c, zero_division=0.0)
    for c in range(1, C)
    if (g == c).any() or (p == c).any()
  ]
  return float(np.mean(scores)) if scores else 1.0


@pytest.mark.parametrize("ignore", [None, 255])
def test_hard_dice_matches_sklearn_f1(ignore):
  """Random predictions: class 4 absent from both (excluded), class 3 only predicted
  (F1 0, counted), classes 1-2 in both; with and without ignored voxels."""
  rng = np.random.default_rng(4)
  C = 5
  labels = rng.integers(0, 3, size=(2, 5, 6, 7)).astype(np.int32)
  logits = rng.normal(size=(2, 5, 6, 7, C)).astype(np.float32)
  logits[..., 3] -= 1.0  # rarer but present
  logits[..., 4] = -1e3  # never predicted
  if ignore is not None:
    labels[rng.random(labels.shape) < 0.3] = ignore
  pred = logits.argmax(-1)
  assert (pred == 3).any() and not (pred == 4).any() and not (labels == 3).any()
  ref = _sklearn_hard_dice(pred, labels, C, ignore)
  got = float(hard_dice(jnp.asarray(logits), jnp.asarray(labels), C, ignore))
  np.testing.assert_allclose(got, ref, rtol=1e-6)
  _, m = dice_ce_loss(jnp.asarray(logits), jnp.asarray(labels), C, ignore_index=ignore)
  np.testing.assert_allclose(float(m["dice"]), ref, rtol=1e-6)


def test_hard_dice_no_foreground_anywhere_is_one():
  labels = np.zeros((1, 4, 4, 4), np.int32)
  logits = np.zeros((1, 4, 4, 4, 3), np.float32)
  logits[..., 0] = 1.0
  assert float(hard_dice(jnp.asarray(logits), jnp.asarray(labels), 3)) == 1.0
