"""Per-case checks shared by `load_index` (headers) and the check CLI (every voxel).

Each check returns a list of problem lines "<file>: <what is wrong>" so callers can
report all problems at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import DataError
from .io import mask_file, read_header, spatial_shape

AFFINE_ATOL_MM = 1e-3
AFFINE_RTOL = 1e-5


def header_problems(
  image: Path, label: Path | None, mask_names: Sequence[str] | None = None
) -> list[str]:
  """Existence, readability, 3D-ness, image/label shape and affine agreement.
  A label folder (per-class masks) is checked mask by mask."""
  if label is not None and Path(label).is_dir():
    problems = []
    for name in mask_names or ():
      f = mask_file(Path(label), name)
      if not f.exists():
        problems.append(f"{f}: missing mask for class '{name}'")
      else:
        problems += header_problems(image, f)
    return problems or header_problems(image, None)
  problems: list[str] = []
  heads = {}
  for path in [image] + ([label] if label is not None else []):
    try:
      img = read_header(path)
      heads[path] = (img, spatial_shape(img, path))
    except DataError as e:
      problems.extend(e.problems)
  if label is not None and image in heads and label in heads:
    (im, ish), (lb, lsh) = heads[image], heads[label]
    if ish != lsh:
      problems.append(f"{label}: label shape {lsh} differs from image shape {ish} ({image.name})")
    elif not np.allclose(im.affine, lb.affine, atol=AFFINE_ATOL_MM, rtol=AFFINE_RTOL):
      diff = float(np.abs(np.asarray(im.affine) - np.asarray(lb.affine)).max())
      problems.append(
        f"{label}: label affine differs from image affine ({image.name}) "
        f"by up to {diff:.4g} (tolerance {AFFINE_ATOL_MM} mm)"
      )
  return problems


def image_voxel_problems(path: Path, data: np.ndarray) -> list[str]:
  """NaN/inf intensities."""
  bad = ~np.isfinite(data)
  if bad.any():
    return [
      f"{path}: {int(np.isnan(data).sum())} NaN and {int(np.isinf(data).sum())} inf intensities"
    ]
  return []


def label_voxel_problems(path: Path, data: np.ndarray, n_declared: int) -> list[str]:
  """Non-integer values and values outside 0..n_declared-1 (no full sort: the
  offending values are collected from the out-of-range voxels only)."""
  finite = np.isfinite(data)
  if not finite.all():
    return [f"{path}: non-integer label values (NaN/inf)"]
  frac = data[np.mod(data, 1) != 0]
  if frac.size:
    return [f"{path}: non-integer label values e.g. {float(frac[0]):.4g}"]
  if data.size and (data.min() < 0 or data.max() >= n_declared):
    outside = np.unique(data[(data < 0) | (data >= n_declared)]).astype(np.int64)
    return [
      f"{path}: label values {outside[:10].tolist()} outside the declared classes "
      f"0..{n_declared - 1}"
    ]
  return []


def duplicate_problems(ids: Sequence[str], images: Sequence[Path]) -> list[str]:
  """One line per id used more than once."""
  seen: dict[str, Path] = {}
  problems = []
  for cid, img in zip(ids, images):
    if cid in seen:
      problems.append(f"{img}: duplicate case id '{cid}' (also {seen[cid]})")
    else:
      seen[cid] = img
  return problems
