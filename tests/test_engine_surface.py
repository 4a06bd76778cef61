"""HD95 and NSD (engine.surface) against a brute-force numpy rewrite, hand-derived values,
and MONAI's `compute_hausdorff_distance(percentile=95)` / `compute_surface_dice`."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from assft_jax.engine.surface import class_metrics, surface_metrics
from tests._surface_reference import SPACING, blob_labels, brute_metrics


def test_against_brute_force_on_8_cubed_masks():
  rng = np.random.default_rng(0)
  for trial in range(8):
    gt = blob_labels(rng, (8, 8, 8), 2) == 1
    preds = {
      "same": gt,
      "dilated": ndimage.binary_dilation(gt),
      "eroded": ndimage.binary_erosion(gt),
      "noise": rng.random(gt.shape) < 0.3,
      "shifted": np.roll(gt, 2, axis=trial % 3),
    }
    for name, pred in preds.items():
      if not (pred.any() and gt.any()):
        continue
      for tol in (1.0, 2.0):
        got = class_metrics(pred, gt, SPACING, tol)
        want = brute_metrics(pred, gt, SPACING, tol)
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=f"{trial} {name} tol {tol}")


def test_hand_derived_values():
  # Two single voxels 2 apart along axis 2 (2.5 mm): each surface is its one voxel, both
  # directed distances are 2 × 2.5 = 5 mm, so HD95 = 5; NSD counts 0 of 2 within 2 mm and
  # 2 of 2 within 5 mm.
  pred, gt = np.zeros((3, 3, 5), bool), np.zeros((3, 3, 5), bool)
  pred[1, 1, 0], gt[1, 1, 2] = True, True
  assert class_metrics(pred, gt, SPACING, 2.0) == (5.0, 0.0)
  assert class_metrics(pred, gt, SPACING, 5.0) == (5.0, 1.0)
  # Ground truth: the whole 3³ grid; its surface is the 26 voxels around the centre (the
  # centre's 6 neighbours are all inside). Prediction: the centre voxel, its own surface.
  # d(P -> G) = the nearest face neighbour = 0.8 mm. d(G -> P): the 26 distances to the
  # centre; the largest 8 are the corners, sqrt(0.8² + 1² + 2.5²) = sqrt(7.89). The linear
  # P95 sits at rank 0.95 × 25 = 23.75 of 0..25, between two corners: sqrt(7.89).
  # HD95 = max(0.8, sqrt(7.89)). NSD at 1 mm: P -> G 1 of 1 (0.8); G -> P the 2 voxels at
  # 0.8 and the 2 at 1.0 of 26; (1 + 4) / 27.
  block, centre = np.ones((3, 3, 3), bool), np.zeros((3, 3, 3), bool)
  centre[1, 1, 1] = True
  hd95, nsd = class_metrics(centre, block, SPACING, 1.0)
  np.testing.assert_allclose(hd95, math.sqrt(0.64 + 1 + 6.25), rtol=1e-12)
  np.testing.assert_allclose(nsd, 5 / 27, rtol=1e-12)


def test_empty_masks_follow_monai():
  z, one = np.zeros((4, 4, 4), bool), np.zeros((4, 4, 4), bool)
  one[1:3, 1:3, 1:3] = True
  both_empty, pred_empty, gt_empty = (
    class_metrics(z, z, SPACING, 2.0),
    class_metrics(z, one, SPACING, 2.0),
    class_metrics(one, z, SPACING, 2.0),
  )
  assert all(math.isnan(v) for v in both_empty)
  for hd95, nsd in (pred_empty, gt_empty):
    assert math.isnan(hd95) and nsd == 0.0


def test_surface_metrics_is_per_class_and_checks_inputs():
  rng = np.random.default_rng(1)
  label, pred = blob_labels(rng, (8, 9, 7), 4), blob_labels(rng, (8, 9, 7), 4)
  hd95, nsd = surface_metrics(pred, label, 4, SPACING, 2.0)
  assert hd95.shape == nsd.shape == (3,)
  for c in (1, 2, 3):
    want = brute_metrics(pred == c, label == c, SPACING, 2.0)
    np.testing.assert_allclose((hd95[c - 1], nsd[c - 1]), want, rtol=1e-12)
  with pytest.raises(ValueError, match="spacing"):
    surface_metrics(pred, label, 4, (1.0, 1.0), 2.0)
  with pytest.raises(ValueError, match="shape"):
    surface_metrics(pred[:-1], label, 4, SPACING, 2.0)


@pytest.mark.torch
def test_parity_with_monai():
  """Several classes on random blobs, anisotropic spacing, with a class missing from the
  prediction, one missing from the ground truth and one absent from both. MONAI computes
  in float32 (distances and the quantile's interpolation: 6e-7 relative seen), so HD95 is
  compared at 1e-5 relative; NSD is a ratio of counts, at 1e-6."""
  import torch
  from monai.metrics import compute_hausdorff_distance, compute_surface_dice

  C, tol = 6, 2.0
  rng = np.random.default_rng(0)

  def one_hot(x):
    return torch.from_numpy(np.eye(C, dtype=np.float32)[x].transpose(3, 0, 1, 2)[None])

  for trial in range(8):
    gt = blob_labels(rng, (20, 24, 18), C - 1)
    noisy = np.where(rng.random(gt.shape) < 0.1, rng.integers(0, C - 1, gt.shape), gt)
    pred = noisy if trial % 2 else blob_labels(rng, gt.shape, C - 1)
    pred[pred == 3] = 0  # missing from the prediction
    gt[gt == 4] = 0  # missing from the ground truth; class 5 is in neither
    hd95, nsd = surface_metrics(pred, gt, C, SPACING, tol)
    with warnings.catch_warnings():  # MONAI warns about each empty class
      warnings.simplefilter("ignore")
      ref_hd = compute_hausdorff_distance(
        one_hot(pred), one_hot(gt), percentile=95, spacing=SPACING
      )
      ref_nsd = compute_surface_dice(
        one_hot(pred), one_hot(gt), class_thresholds=[tol] * (C - 1), spacing=SPACING
      )
    ref_hd, ref_nsd = ref_hd[0].numpy().astype(np.float64), ref_nsd[0].numpy().astype(np.float64)
    assert np.isnan(hd95[2:]).all() and np.isfinite(hd95[:2]).all()  # not a vacuous check
    assert nsd[2] == nsd[3] == 0.0 and np.isnan(nsd[4])
    np.testing.assert_allclose(hd95, ref_hd, rtol=1e-5, err_msg=f"trial {trial}")
    np.testing.assert_allclose(nsd, ref_nsd, rtol=1e-6, err_msg=f"trial {trial}")
