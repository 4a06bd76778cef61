"""Preprocessing pipelines with an on-disk cache.

paper: clip to the volume's 5th-95th percentiles, z-score, crop/pad to a fixed
       sub-volume centred on the body (paper §4.1).
ctfm:  HU -1024..2048 -> 0..1 clipped (CT-FM's ScaleIntensityRange), crop foreground.
Both: optional reorientation and resampling (trilinear image, nearest label) first.

The crop centre comes from the image alone (never the label) so labeled and unlabeled
cases are treated alike and nothing leaks from the ground truth.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from assft_jax.atomic import atomic_dir

from .datasets import Case, Dataset
from .errors import DataError
from .geometry import centred_start, crop_or_pad, resample_to_shape, target_shape
from .io import voxel_spacing
from .validate import header_problems, read_case

log = logging.getLogger("assft_jax.data")
CACHE_VERSION = 1
HU_RANGE = (-1024.0, 2048.0)


@dataclass(frozen=True)
class PreprocessConfig:
  """pipeline: "paper" | "ctfm".
  crop_size: (D, H, W) fixed sub-volume (crop or pad around the body centre);
      None = crop to the body/foreground bounding box.
  spacing: target voxel size in mm per array axis, or None (keep).
  orientation: "RAS" | "SPL" | None (file voxel order). CT-FM expects "SPL".
  """

  pipeline: str = "paper"
  crop_size: tuple[int, int, int] | None = None
  spacing: tuple[float, float, float] | None = None
  orientation: str | None = None

  def __post_init__(self):
    if self.pipeline not in ("paper", "ctfm"):
      raise DataError(f"pipeline: unknown '{self.pipeline}' (paper, ctfm)")
    for name in ("crop_size", "spacing"):
      v = getattr(self, name)
      if v is not None and (len(v) != 3 or any(x <= 0 for x in v)):
        raise DataError(f"{name}: expected 3 positive values, got {v}")


@dataclass(frozen=True)
class Volume:
  """image: [D, H, W, 1] float32; label: [D, H, W] int32 class indices or None;
  meta: JSON-able dict (id, spacing, affine, and the keys `save_prediction` uses)."""

  image: np.ndarray
  label: np.ndarray | None
  meta: dict


class PreparedVolumes(Mapping):
  """id -> Volume, read lazily from the cache with np.load(mmap_mode="r")."""

  def __init__(self, dirs: Mapping[str, Path]):
    self._dirs = dict(dirs)

  def __getitem__(self, cid: str) -> Volume:
    d = self._dirs[cid]
    label = np.load(d / "label.npy", mmap_mode="r") if (d / "label.npy").exists() else None
    meta = json.loads((d / "meta.json").read_text())
    return Volume(np.load(d / "image.npy", mmap_mode="r"), label, meta)

  def __iter__(self) -> Iterator[str]:
    return iter(self._dirs)

  def __len__(self) -> int:
    return len(self._dirs)


def prepare(
  dataset: Dataset,
  cfg: PreprocessConfig,
  cache_dir: str | os.PathLike,
  ids: Sequence[str] | None = None,
) -> Mapping[str, Volume]:
  """Preprocess the cases (all, or `ids`) into `cache_dir`, reusing valid cache
  entries. Each volume loaded is validated; all problems are raised together."""
  cache_dir = Path(cache_dir)
  cache_dir.mkdir(parents=True, exist_ok=True)
  wanted = set(ids) if ids is not None else None
  dirs, problems, built = {}, [], 0
  for case in dataset.cases:
    if wanted is not None and case.id not in wanted:
      continue
    d = cache_dir / f"{case.id}-{cache_key(case, cfg, dataset.label_lut, dataset.mask_names)}"
    if not (d / "meta.json").exists():
      try:
        _write_entry(d, *preprocess_case(case, cfg, dataset))
        built += 1
      except DataError as e:
        problems.extend(e.problems)
        continue
    dirs[case.id] = d
  log.info(
    "prepare: %d case(s) from cache, %d preprocessed into %s", len(dirs) - built, built, cache_dir
  )
  if wanted is not None and (missing := wanted - {c.id for c in dataset.cases}):
    problems.append(f"{dataset.root}: unknown case ids {sorted(missing)[:10]}")
  if problems:
    raise DataError(problems, header=f"prepare: {len(problems)} problem(s)")
  return PreparedVolumes(dirs)


def cache_key(case: Case, cfg: PreprocessConfig, lut, masks=None) -> str:
  """Fingerprint of the input files (path, size, mtime; every file of a mask folder)
  and every setting."""

  def stat(p):
    if p is None:
      return None
    p = Path(p)
    if p.is_dir():
      return [stat(f) for f in sorted(p.iterdir())]
    st = p.stat()
    return [str(p.resolve()), st.st_size, st.st_mtime_ns]

  blob = json.dumps(
    [CACHE_VERSION, stat(case.image), stat(case.label), lut, masks, asdict(cfg)],
    sort_keys=True,
    default=list,
  )
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def preprocess_case(case: Case, cfg: PreprocessConfig, dataset: Dataset):
  """-> (image [D,H,W,1] f32, label [D,H,W] i32 | None, meta). Raises DataError."""
  image, label, meta = load_checked(case, cfg.orientation, dataset)
  meta["id"] = case.id
  meta["oriented_shape"] = list(image.shape)
  affine = np.asarray(meta["affine"], float)
  if cfg.spacing is not None:
    shape = target_shape(image.shape, meta["spacing"], cfg.spacing)
    scale = np.array(image.shape, float) / np.array(shape, float)
    affine = affine @ nib.affines.from_matvec(np.diag(scale), 0.5 * scale - 0.5)
    image = resample_to_shape(image, shape, order=1)
    if label is not None:
      label = resample_to_shape(label, shape, order=0)
  meta["grid_shape"] = list(image.shape)
  image, body = normalise(image, cfg.pipeline)
  start, size = crop_window(body, cfg.crop_size)
  pad_value = float(image.min())
  image = crop_or_pad(image, start, size, pad_value)
  if label is not None:
    label = crop_or_pad(label, start, size, 0)
  meta.update(
    crop_start=list(start),
    affine=(affine @ nib.affines.from_matvec(np.eye(3), start)).tolist(),
    spacing=voxel_spacing(affine),
    pad_value=pad_value,
    pipeline=cfg.pipeline,
    shape=list(size),
  )
  return image[..., None].astype(np.float32), label, meta


def load_checked(case: Case, orientation: str | None, dataset: Dataset):
  """Image [D,H,W] f32, label [D,H,W] i32 class indices (LUT applied) or None, meta;
  every voxel checked, all problems of the case raised together."""
  voxels = read_case(
    case.image, case.label, dataset.n_label_values, orientation, dataset.mask_names
  )
  if voxels.problems:
    raise DataError(voxels.problems)
  label = None if voxels.label is None else dataset.class_index(voxels.label)
  return voxels.image, label, voxels.meta


def prepare_label(
  dataset: Dataset, case_id: str, label_path: str | os.PathLike, pcfg: PreprocessConfig
) -> np.ndarray:
  """An annotator's label file for case `case_id`, preprocessed onto exactly the grid
  of that case's prepared image (orientation, spacing, crop): [D, H, W] int32 class
  indices, equal to what `prepare` gives for the same file as the case's label.

  Checks the file against the case's image (shape, affine, 3D) and every voxel (class
  range, integers); raises DataError naming the file. Not cached: an annotator's file
  is read once per round, and a cache would have to key on its content.
  """
  case = dataclasses.replace(dataset.case(case_id), label=Path(label_path))
  problems = header_problems(case.image, case.label, dataset.mask_names)
  if problems:
    raise DataError(problems)
  _, label, _ = preprocess_case(case, pcfg, dataset)
  return label


def normalise(image: np.ndarray, pipeline: str) -> tuple[np.ndarray, np.ndarray]:
  """-> (normalised float32 copy of image, body/foreground mask used for cropping).
  One output array, updated in place (a 512^2 x 300 CT is 300 MB per copy)."""
  if pipeline == "ctfm":
    lo, hi = HU_RANGE
    out = np.subtract(image, lo, dtype=np.float32)
    out /= hi - lo
    np.clip(out, 0.0, 1.0, out=out)
    return out, out > 0  # MONAI CropForeground's default select_fn (x > 0)
  p5, p95 = np.percentile(image, [5, 95])
  body = image > p5 + 0.25 * (p95 - p5)  # air/background sits at the low end
  out = np.clip(image, p5, p95).astype(np.float32, copy=False)
  mean, std = float(out.mean(dtype=np.float64)), float(out.std(dtype=np.float64))
  out -= mean
  out /= std if std > 1e-8 else 1.0
  return out, body


def crop_window(mask: np.ndarray, crop_size) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """(start, size) of the crop. The box ignores stray voxels: along each axis it
  keeps the slabs holding >= 1% of the busiest slab's mask voxels."""
  box = _robust_bbox(mask)
  if box is None:  # nothing found: use the whole grid
    box = ((0,) * mask.ndim, tuple(mask.shape))
  lo, hi = box
  if crop_size is None:
    return tuple(lo), tuple(b - a for a, b in zip(lo, hi))
  center = [(a + b) / 2 for a, b in zip(lo, hi)]
  return centred_start(center, crop_size), tuple(int(k) for k in crop_size)


def _robust_bbox(mask: np.ndarray):
  lo, hi = [], []
  for ax in range(mask.ndim):
    prof = mask.sum(axis=tuple(a for a in range(mask.ndim) if a != ax))
    if prof.max() == 0:
      return None
    hit = np.flatnonzero(prof >= 0.01 * prof.max())
    lo.append(int(hit[0]))
    hi.append(int(hit[-1]) + 1)
  return tuple(lo), tuple(hi)


def _write_entry(d: Path, image: np.ndarray, label: np.ndarray | None, meta: dict) -> None:
  """image.npy, label.npy, meta.json into the cache folder `d`, whole or not at all."""
  with atomic_dir(d, replace=False) as tmp:  # content-keyed: the first writer wins
    np.save(tmp / "image.npy", image)
    if label is not None:
      np.save(tmp / "label.npy", label.astype(np.int32))
    (tmp / "meta.json").write_text(json.dumps(meta))
