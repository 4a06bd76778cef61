"""Per-case checks: headers (`load_index`), and every voxel (`read_case`, shared by
`load_index(validate="full")`, the check CLI and preprocessing).

Each check returns a list of problem lines "<file>: <what is wrong>" so callers can
report all problems at once.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import DataError
from .io import load_label, load_volume, mask_file, read_header, spatial_shape

if TYPE_CHECKING:  # datasets imports this module
  from .datasets import Case

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
        f"by up to {diff:.4g} (tolerance {AFFINE_ATOL_MM} mm): label {_grid(lb.affine)}, "
        f"image {_grid(im.affine)}"
      )
  return problems


def _grid(affine: np.ndarray) -> str:
  """An affine as a person compares two: origin (mm), voxel spacing (mm) and the 3x3."""
  a = np.asarray(affine, float)
  rows = ", ".join(_vec(r) for r in a[:3, :3])
  return (
    f"origin {_vec(a[:3, 3])} spacing {_vec(np.linalg.norm(a[:3, :3], axis=0))} matrix [{rows}]"
  )


def _vec(v) -> str:
  return "(" + ", ".join(f"{x:.4g}" for x in v) + ")"


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


@dataclass(frozen=True)
class CaseVoxels:
  """One case read whole and checked voxel by voxel.

  image: [D, H, W] float32, None when unreadable; meta: `load_volume`'s, or None.
  label: [D, H, W] float32 values as in the file, None when the case has none or it is
  unreadable (or the image is). The problems are split by file so a caller can still
  use a good image beside a bad label.
  """

  image: np.ndarray | None
  meta: dict | None
  label: np.ndarray | None
  image_problems: tuple[str, ...]
  label_problems: tuple[str, ...]

  @property
  def problems(self) -> list[str]:
    return [*self.image_problems, *self.label_problems]


def read_case(
  image: Path,
  label: Path | None,
  n_values: int,
  orientation: str | None = None,
  mask_names: Sequence[str] | None = None,
) -> CaseVoxels:
  """Reads a case (reoriented to `orientation`) and checks every voxel: NaN/inf
  intensities, non-integer labels, labels outside 0..n_values-1, and a label whose
  shape differs from the image's. An unreadable image leaves the label unread."""
  try:
    img, meta = load_volume(image, orientation)
  except DataError as e:
    return CaseVoxels(None, None, None, e.problems, ())
  image_problems = tuple(image_voxel_problems(image, img))
  if label is None:
    return CaseVoxels(img, meta, None, image_problems, ())
  try:
    lab, _ = load_label(label, orientation, mask_names)
  except DataError as e:
    return CaseVoxels(img, meta, None, image_problems, e.problems)
  label_problems = label_voxel_problems(label, lab, n_values)
  if lab.shape != img.shape:
    label_problems.append(f"{label}: label shape {lab.shape} differs from image {img.shape}")
  return CaseVoxels(img, meta, lab, image_problems, tuple(label_problems))


def read_cases(
  cases: Sequence[Case],
  n_values: int,
  mask_names: Sequence[str] | None,
  skip: Container[str] = frozenset(),
) -> Iterator[tuple[int, CaseVoxels]]:
  """(index into `cases`, `read_case`) for every case whose image and label are not in
  `skip` (files that already have a header problem), one case in memory at a time."""
  for i, case in enumerate(cases):
    if str(case.image) in skip or (case.label is not None and str(case.label) in skip):
      continue
    yield i, read_case(case.image, case.label, n_values, None, mask_names)


def problem_files(problems: Iterable[str]) -> set[str]:
  """The files named by problem lines "<file>: <what is wrong>"."""
  return {p.split(": ")[0] for p in problems}
