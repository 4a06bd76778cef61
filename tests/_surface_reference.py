"""Shared helpers of the surface-metric tests (no tests here): a brute-force numpy
rewrite of HD95/NSD and random blob labels."""

import numpy as np
from scipy import ndimage

SPACING = (0.8, 1.0, 2.5)  # anisotropic, as a resampled MR grid


def brute_surface(mask: np.ndarray) -> np.ndarray:
  """Voxels of `mask` with a 6-neighbour outside it, by shifting a zero-padded copy."""
  pad = np.pad(mask, 1)
  inner = np.ones_like(mask)
  for ax in range(3):
    for step in (-1, 1):
      inner &= np.roll(pad, step, axis=ax)[1:-1, 1:-1, 1:-1]
  return mask & ~inner


def brute_metrics(pred, gt, spacing, tol) -> tuple[float, float]:
  """(HD95, NSD) from all-pairs distances between the two surfaces' voxel centres (index ×
  spacing). Empty masks as MONAI gives them (checked in test_parity_with_monai): both
  empty (NaN, NaN), one empty (NaN, 0)."""
  if not (pred.any() and gt.any()):
    return float("nan"), (float("nan") if not (pred.any() or gt.any()) else 0.0)
  a = np.argwhere(brute_surface(pred)) * np.asarray(spacing)
  b = np.argwhere(brute_surface(gt)) * np.asarray(spacing)
  d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))  # [|surface P|, |surface G|]
  d_pg, d_gp = d.min(axis=1), d.min(axis=0)
  hd95 = max(np.percentile(d_pg, 95), np.percentile(d_gp, 95))
  nsd = ((d_pg <= tol).sum() + (d_gp <= tol).sum()) / (len(d_pg) + len(d_gp))
  return float(hd95), float(nsd)


def blob_labels(rng, shape, num_classes) -> np.ndarray:
  """Smooth random blobs of classes 1..C-1 on background, some touching the grid edge."""
  field = ndimage.gaussian_filter(rng.normal(size=(num_classes, *shape)), sigma=(0, 2, 2, 2))
  top = field.max(axis=0)
  label = field.argmax(axis=0)
  label[top < np.quantile(top, 0.4)] = 0
  return label
