"""Surface metrics per case and foreground class: HD95 and NSD, with MONAI's definitions.

They follow MONAI 1.6's `compute_hausdorff_distance(percentile=95)` and
`compute_surface_dice(class_thresholds=[tol], use_subvoxels=False)`, both with
include_background=False, and are checked against them (tests/test_engine_surface.py):

- Surface of a binary mask M: the voxels of M with a 6-neighbour outside M, i.e.
  M XOR binary_erosion(M) with the cross structure, voxels past the grid counting as
  background (MONAI's `get_mask_edges`: crop to the union's box with a margin of 1,
  pad with zeros, scipy's erosion).
- d(A -> B): for each surface voxel of A, the Euclidean distance in mm (index × spacing)
  to the nearest surface voxel of B (exact: scipy's distance transform with `sampling`).
- HD95 = max(P95(d(P -> G)), P95(d(G -> P))): the 95th percentile of each directed set,
  linearly interpolated (np.percentile's default, as torch.quantile), then the larger.
- NSD(tol) = (#{d(P -> G) <= tol} + #{d(G -> P) <= tol}) / (|surface P| + |surface G|):
  each surface voxel counts once (no sub-voxel areas).

Empty masks, as MONAI returns them:
- class in neither prediction nor ground truth: HD95 NaN, NSD NaN (excluded, as Dice is);
- class in exactly one of them: NSD 0, HD95 NaN. MONAI's directed distances to an empty
  surface are all inf, and the interpolated percentile of infinities is inf - inf = NaN
  (its max, without a percentile, would be inf). A class missed or invented outright thus
  shows in Dice and NSD (both 0), never as an infinite HD95; `evaluate` counts those
  case-class pairs beside the HD95 mean.

Ties at the tolerance: distances are float64 here and float32 in MONAI, so a distance
within a float32 rounding of `tol` can count differently; exact ties (e.g. 2 voxels of
1 mm at tol = 2) agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def surface(mask: np.ndarray) -> np.ndarray:
  """[D, H, W] bool -> [D, H, W] bool: the voxels of `mask` with a 6-neighbour outside it
  (past the grid counts as outside)."""
  mask = np.asarray(mask, bool)
  return mask & ~ndimage.binary_erosion(mask)  # erosion's border_value=0: grid edge is out


def directed_distances(src: np.ndarray, dst: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
  """[n_src] float64 mm: each True voxel of `src` to the nearest True voxel of `dst`
  (surfaces [D, H, W] bool, `dst` not empty)."""
  return ndimage.distance_transform_edt(~dst, sampling=spacing)[src]


def class_metrics(
  pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], tolerance_mm: float
) -> tuple[float, float]:
  """(HD95 mm, NSD) of one class: pred, gt [D, H, W] bool masks on one grid of voxel
  size `spacing` (mm along the array axes). NaN/0 for empty masks as the module says."""
  pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
  has_p, has_g = bool(pred.any()), bool(gt.any())
  if not (has_p or has_g):
    return math.nan, math.nan
  if not (has_p and has_g):
    return math.nan, 0.0
  # Only the union's box (margin 1) matters: every surface voxel, hence every nearest
  # one, lies in it, and its margin keeps the erosion's outside as it is on the full grid.
  box = _union_box(pred | gt)
  sp, sg = surface(pred[box]), surface(gt[box])
  d_pg = directed_distances(sp, sg, spacing)
  d_gp = directed_distances(sg, sp, spacing)
  hd95 = max(float(np.percentile(d_pg, 95)), float(np.percentile(d_gp, 95)))
  within = np.count_nonzero(d_pg <= tolerance_mm) + np.count_nonzero(d_gp <= tolerance_mm)
  return hd95, within / (d_pg.size + d_gp.size)


def surface_metrics(
  pred: np.ndarray,
  label: np.ndarray,
  num_classes: int,
  spacing: Sequence[float],
  tolerance_mm: float,
) -> tuple[np.ndarray, np.ndarray]:
  """pred, label [D, H, W] int class indices -> (hd95, nsd), each [num_classes - 1]
  float64 over classes 1..C-1 (mm and fraction; NaN where excluded)."""
  pred, label = np.asarray(pred), np.asarray(label)
  if pred.shape != label.shape:
    raise ValueError(f"prediction shape {pred.shape} != label shape {label.shape}")
  spacing = tuple(float(s) for s in spacing)
  if len(spacing) != pred.ndim or min(spacing) <= 0:
    raise ValueError(f"spacing {spacing}: need {pred.ndim} positive voxel sizes (mm)")
  out = [class_metrics(pred == c, label == c, spacing, tolerance_mm) for c in range(1, num_classes)]
  out = np.array(out, np.float64).reshape(num_classes - 1, 2)
  return out[:, 0], out[:, 1]


def _union_box(mask: np.ndarray) -> tuple[slice, ...]:
  """Slices of the bounding box of `mask` (not empty), grown by 1 and clipped to the grid."""
  box = []
  for ax in range(mask.ndim):
    hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax)))
    box.append(slice(max(int(hit[0]) - 1, 0), int(hit[-1]) + 2))
  return tuple(box)
