"""Intensity scales: which cases of a dataset share an order of magnitude of intensity.

Real collections mix acquisitions whose raw intensities live on different scales: MSD's
Hippocampus stores some cases as 0-255 integers and others as floats near 10^3 or 10^5.
A per-volume normalisation (the paper pipeline's 5-95 % clip and z-score) trains them
together, but they remain groups of cases acquired or processed alike, which a user
should know of (`data.check` reports them) and may stratify the test split or the power
measurement by (`--stratify_by=intensity_group`).

A case's scale is the 99.5th percentile of its raw voxels (robust to a few hot voxels).
Cases are sorted by the log10 of that scale and split wherever two neighbours differ by
more than GAP_DECADES: a group is a run of cases within a factor of ~3 of each other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

GROUP_FIELD = "intensity_group"  # the derived --stratify_by field
GAP_DECADES = 0.5  # neighbours further apart than 10^0.5 (about 3x) start a new group
PERCENTILE = 99.5


def scale(image: np.ndarray) -> float:
  """The intensity scale of a volume: the 99.5th percentile of its voxels."""
  return float(np.percentile(np.asarray(image, np.float64), PERCENTILE))


def file_scale(path: str | Path) -> float:
  """`scale` of a NIfTI file's raw voxels (its scaling slope and intercept applied)."""
  return scale(np.asanyarray(nib.load(str(path)).dataobj))


def groups(scales: Mapping[str, float]) -> dict[str, str]:
  """id -> the name of its intensity group, "p99.5 lo-hi" (the group's range of scales).

  Scales <= 0 (an empty or negative image) join the lowest group."""
  order = sorted(scales, key=lambda c: scales[c])
  logs = [math.log10(scales[c]) if scales[c] > 0 else -math.inf for c in order]
  runs: list[list[str]] = []
  for i, cid in enumerate(order):
    if not runs or (logs[i] - logs[i - 1] > GAP_DECADES and math.isfinite(logs[i - 1])):
      runs.append([])
    runs[-1].append(cid)
  out = {}
  for run in runs:
    name = f"p{PERCENTILE:g} {scales[run[0]]:.3g}-{scales[run[-1]]:.3g}"
    out.update(dict.fromkeys(run, name))
  return out


def summary(scales: Mapping[str, float]) -> list[dict]:
  """The groups, lowest first: {name, n, low, high, median} of the scales in each."""
  named = groups(scales)
  out = []
  for name in dict.fromkeys(named[c] for c in sorted(scales, key=lambda c: scales[c])):
    vals = sorted(scales[c] for c in named if named[c] == name)
    out.append(
      {
        "name": name,
        "n": len(vals),
        "low": round(vals[0], 3),
        "high": round(vals[-1], 3),
        "median": round(float(np.median(vals)), 3),
      }
    )
  return out


def dataset_groups(images: Mapping[str, str | Path], ids: Sequence[str]) -> dict[str, str]:
  """`groups` of the cases `ids` from their image files (reads every voxel of each)."""
  return groups({c: file_scale(images[c]) for c in ids})
