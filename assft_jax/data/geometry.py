"""Grid operations shared by preprocessing and `save_prediction`: resampling and
crop/pad with an explicit start, so that each step can be undone exactly."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def target_shape(
  shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]
) -> tuple[int, ...]:
  """Shape of the grid covering the same extent at `new_spacing` (at least 1 voxel)."""
  return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, new_spacing))


def resample_to_shape(arr: np.ndarray, out_shape: Sequence[int], order: int) -> np.ndarray:
  """Resample a 3D array onto `out_shape`, voxel centres aligned (grid-mode).

  order 1 = trilinear (images), order 0 = nearest (labels). A diagonal
  `affine_transform` keeps memory at one output array (no coordinate grids).
  """
  out_shape = tuple(int(n) for n in out_shape)
  if tuple(arr.shape) == out_shape:
    return np.asarray(arr)
  scale = np.array(arr.shape, float) / np.array(out_shape, float)
  # input coordinate of output voxel centre i: (i + 0.5) * scale - 0.5
  offset = 0.5 * scale - 0.5
  return ndimage.affine_transform(
    np.asarray(arr), scale, offset=offset, output_shape=out_shape, order=order, mode="nearest"
  )


def crop_or_pad(
  arr: np.ndarray, start: Sequence[int], size: Sequence[int], pad_value: float = 0
) -> np.ndarray:
  """Window `arr[start : start + size]` on the first len(size) axes; parts outside
  the array (negative start, or running past the end) are filled with `pad_value`."""
  out = np.full(tuple(size) + arr.shape[len(size) :], pad_value, dtype=arr.dtype)
  src, dst = _overlap(arr.shape[: len(size)], start, size)
  out[dst] = arr[src]
  return out


def uncrop(
  window: np.ndarray, start: Sequence[int], full_shape: Sequence[int], fill: float = 0
) -> np.ndarray:
  """Inverse of `crop_or_pad`: put `window` back into an array of `full_shape`."""
  out = np.full(tuple(full_shape), fill, dtype=window.dtype)
  src, dst = _overlap(full_shape, start, window.shape)
  out[src] = window[dst]
  return out


def _overlap(shape, start, size):
  """Slices (into the full array, into the window) of their common region."""
  src, dst = [], []
  for n, s, k in zip(shape, start, size):
    lo, hi = max(s, 0), min(s + k, n)
    hi = max(hi, lo)
    src.append(slice(lo, hi))
    dst.append(slice(lo - s, hi - s))
  return tuple(src), tuple(dst)


def centred_start(center: Sequence[float], size: Sequence[int]) -> tuple[int, ...]:
  """Start index of a window of `size` centred on `center`."""
  return tuple(int(round(c - k / 2)) for c, k in zip(center, size))
