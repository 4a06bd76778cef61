"""NIfTI input/output with nibabel.

Array convention: a loaded volume is the file's voxel array (axes i, j, k) unless an
`orientation` (axis codes such as "RAS" or CT-FM's "SPL") is asked for; then axis 0
points toward the first letter, and so on. The returned `meta` holds everything needed
to put a prediction back into the SOURCE file's grid (`save_prediction`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from assft_jax.atomic import atomic_path

from .errors import DataError
from .geometry import resample_to_shape, uncrop


def read_header(path: str | os.PathLike) -> nib.Nifti1Image:
  """Open a NIfTI file lazily (header only). Raises DataError naming the file."""
  path = Path(path)
  if not path.exists():
    raise DataError(f"{path}: file not found")
  try:
    return nib.load(str(path))
  except Exception as e:  # nibabel raises many types for corrupt files
    raise DataError(f"{path}: unreadable NIfTI ({type(e).__name__}: {e})") from None


def spatial_shape(img: nib.Nifti1Image, path: Path) -> tuple[int, int, int]:
  """The 3D shape; a 4D image with >1 channel is an error that suggests a channel."""
  shape = tuple(int(n) for n in img.shape)
  if len(shape) > 3 and all(n == 1 for n in shape[3:]):
    shape = shape[:3]
  if len(shape) == 4:
    raise DataError(
      f"{path}: 4D image with shape {shape}; take one channel, "
      f"e.g. `nib.load(p).slicer[..., 0]` (channels 0..{shape[3] - 1})"
    )
  if len(shape) != 3:
    raise DataError(f"{path}: expected a 3D image, got shape {shape}")
  return shape  # type: ignore[return-value]


def load_volume(
  path: str | os.PathLike, orientation: str | None = None, dtype: Any = np.float32
) -> tuple[np.ndarray, dict]:
  """Read a 3D NIfTI. Returns (array [D, H, W] of `dtype`, meta).

  meta keys: path, source_affine, source_shape, ornt (source -> array axis transform),
  orientation, affine (of the returned array), spacing (mm, per returned axis).
  """
  path = Path(path)
  img = read_header(path)
  shape = spatial_shape(img, path)
  try:
    data = np.asarray(img.get_fdata(dtype=np.float32)).reshape(shape)
  except Exception as e:
    raise DataError(f"{path}: corrupt voxel data ({type(e).__name__}: {e})") from None
  affine = np.asarray(img.affine, float)
  xform = _ornt_xform(affine, orientation)
  arr = nib.orientations.apply_orientation(data, xform)
  new_affine = affine @ nib.orientations.inv_ornt_aff(xform, shape)
  meta = {
    "path": str(path),
    "source_affine": affine.tolist(),
    "source_shape": list(shape),
    "ornt": xform.tolist(),
    "orientation": orientation,
    "affine": new_affine.tolist(),
    "spacing": voxel_spacing(new_affine),
  }
  return np.ascontiguousarray(arr, dtype=dtype), meta


def mask_file(folder: Path, name: str) -> Path:
  """The binary mask of class `name` in a per-class mask folder."""
  for ext in (".nii.gz", ".nii"):
    if (folder / (name + ext)).exists():
      return folder / (name + ext)
  return folder / (name + ".nii.gz")


def load_label(
  path: str | os.PathLike, orientation: str | None = None, mask_names: Sequence[str] | None = None
) -> tuple[np.ndarray, dict]:
  """A label map [D, H, W] (float32; the caller checks its values) and meta.

  `path` is a label file, or a folder of per-class binary masks `<name>.nii.gz`
  (AbdomenAtlas `segmentations/`): mask k of `mask_names` becomes value k + 1
  (a later mask wins where masks overlap)."""
  path = Path(path)
  if not path.is_dir():
    return load_volume(path, orientation)
  label, meta, problems = None, None, []
  for k, name in enumerate(mask_names or (), start=1):
    f = mask_file(path, name)
    try:
      arr, m = load_volume(f, orientation)
    except DataError as e:
      problems.extend(e.problems)
      continue
    if label is None:
      label, meta = np.zeros(arr.shape, np.float32), m
    if arr.shape != label.shape:
      problems.append(f"{f}: mask shape {arr.shape} differs from the other masks {label.shape}")
      continue
    if not np.isin(arr, (0.0, 1.0)).all():
      problems.append(f"{f}: mask values other than 0 and 1")
    label[arr > 0.5] = k
  if label is None and not problems:
    problems.append(f"{path}: no class masks found")
  if problems:
    raise DataError(problems)
  return label, meta


def voxel_spacing(affine: np.ndarray) -> list[float]:
  """Voxel size (mm) along each array axis of a [4, 4] affine."""
  return [float(v) for v in nib.affines.voxel_sizes(np.asarray(affine, float))]


def _ornt_xform(affine: np.ndarray, orientation: str | None) -> np.ndarray:
  n = 3
  if orientation is None:
    return np.stack([np.arange(n), np.ones(n)], axis=1)
  src = nib.orientations.io_orientation(affine)
  tgt = nib.orientations.axcodes2ornt(tuple(orientation.upper()))
  return nib.orientations.ornt_transform(src, tgt)


def inverse_ornt(xform) -> np.ndarray:
  """Inverse [3, 2] of a nibabel orientation transform (row i of `xform` sends input
  axis i to output axis xform[i, 0], flipped if xform[i, 1] == -1)."""
  # The output of `xform` has orientation `xform` relative to its input's axes, so the
  # transform from the output back to the input's (identity) orientation inverts it.
  identity = np.stack([np.arange(3), np.ones(3)], axis=1)
  return nib.orientations.ornt_transform(identity, np.asarray(xform, float))


def to_source_grid(arr: np.ndarray, meta: dict, order: int = 0, fill: float = 0) -> np.ndarray:
  """Undo crop/pad, resampling and reorientation (in that order) of a [D, H, W] array
  in the preprocessed grid. Returns an array in the source file's voxel grid.

  order: 0 (nearest) for labels, 1 (linear) for continuous maps; `fill` goes where the
  crop did not cover the source (the model saw nothing there).
  """
  arr = np.asarray(arr)
  if "crop_start" in meta:
    arr = uncrop(arr, meta["crop_start"], meta["grid_shape"], fill)
  if "oriented_shape" in meta:
    arr = resample_to_shape(arr, meta["oriented_shape"], order=order)
  arr = nib.orientations.apply_orientation(arr, inverse_ornt(meta["ornt"]))
  if list(arr.shape) != list(meta["source_shape"]):
    raise DataError(
      f"{meta.get('path', '?')}: prediction maps to shape {arr.shape}, "
      f"source is {tuple(meta['source_shape'])}"
    )
  return arr


def save_prediction(pred: np.ndarray, meta: dict, out_path: str | os.PathLike) -> Path:
  """Write an integer label map pred [D, H, W] (preprocessed grid described by
  `meta`) as NIfTI in the SOURCE image's grid and affine, so it overlays the
  original scan in 3D Slicer / ITK-SNAP. Written atomically."""
  arr = to_source_grid(pred, meta)
  dtype = np.uint8 if arr.size == 0 or (arr.min() >= 0 and arr.max() < 256) else np.int16
  return _save_in_source(arr.astype(dtype), meta, out_path)


def save_map(arr: np.ndarray, meta: dict, out_path: str | os.PathLike) -> Path:
  """A float map [D, H, W] on the preprocessed grid (e.g. the voxel entropy) as float32
  NIfTI in the source grid and affine. Resampled back linearly (a continuous quantity;
  nearest would make blocks), 0 outside the crop. Written atomically."""
  arr = to_source_grid(np.asarray(arr, np.float32), meta, order=1, fill=0.0)
  return _save_in_source(arr.astype(np.float32), meta, out_path)


def save_probabilities(probs: np.ndarray, meta: dict, out_path: str | os.PathLike) -> Path:
  """Class probabilities probs [D, H, W, C] on the preprocessed grid as a 4D float32
  NIfTI [X, Y, Z, C] in the source grid and affine. Each class is resampled linearly,
  which keeps the sum over C at 1; outside the crop background is 1, the rest 0 (what
  the label map says there). Written atomically."""
  probs = np.asarray(probs, np.float32)
  maps = [
    to_source_grid(probs[..., c], meta, order=1, fill=float(c == 0)) for c in range(probs.shape[-1])
  ]
  return _save_in_source(np.stack(maps, axis=-1).astype(np.float32), meta, out_path)


def _save_in_source(arr: np.ndarray, meta: dict, out_path: str | os.PathLike) -> Path:
  """arr [X, Y, Z(, C)] already in the source voxel grid -> NIfTI with the source's
  affine (and header, when the source file is still there), data stored unscaled."""
  affine = np.asarray(meta["source_affine"], float)
  header = None
  src = Path(meta.get("path", ""))
  if src.is_file():
    header = nib.load(str(src)).header.copy()
  img = nib.Nifti1Image(arr, affine, header=header)
  img.set_data_dtype(arr.dtype)
  img.header.set_slope_inter(1, 0)
  img.set_qform(affine, code=1)
  img.set_sform(affine, code=1)
  return atomic_save(img, out_path)


def atomic_save(img: nib.Nifti1Image, out_path: str | os.PathLike) -> Path:
  """nib.save through `assft_jax.atomic` (the temp name keeps .nii/.nii.gz, which
  decides nibabel's compression)."""
  out_path = Path(out_path)
  suffix = ".nii.gz" if out_path.name.endswith(".nii.gz") else out_path.suffix
  with atomic_path(out_path, suffix=suffix) as tmp:
    nib.save(img, str(tmp))
  return out_path
