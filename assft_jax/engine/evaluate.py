"""Test-split evaluation.

Per case and foreground class c: Dice = 2|P_c ∩ G_c| / (|P_c| + |G_c|); a class absent
from both the ground truth and the prediction is excluded (NaN), not counted as 1.
The case score is the mean over its remaining classes; the report gives mean ± SD over
cases (SD with ddof=1, the sample SD; 0 for a single case) and the per-class means.

With a tolerance, HD95 (mm) and NSD (`engine.surface`, MONAI's definitions) are scored
beside Dice on the evaluated grid, and summarised by the same rule: NaN left out of every
mean. HD95 is NaN where a class is in only one of prediction and ground truth (MONAI);
those case-class pairs are counted (`n_one_sided`) instead of poisoning the mean.
Evaluation runs once per round on the test split, never in training or scoring.
Predictions can be written as NIfTI in the source geometry (`data.io.save_prediction`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from flax import linen as nn

from assft_jax.engine.predict import iter_predictions
from assft_jax.engine.surface import surface_metrics


def dice_per_class(pred: np.ndarray, label: np.ndarray, num_classes: int) -> np.ndarray:
  """[num_classes - 1] float64 Dice of classes 1..C-1; NaN where absent in both."""
  pred, label = np.asarray(pred), np.asarray(label)
  if pred.shape != label.shape:
    raise ValueError(f"prediction shape {pred.shape} != label shape {label.shape}")
  out = np.full(num_classes - 1, np.nan)
  for c in range(1, num_classes):
    p, g = pred == c, label == c
    denom = p.sum() + g.sum()
    if denom:
      out[c - 1] = 2.0 * np.logical_and(p, g).sum() / denom
  return out


def summarize(
  per_class: np.ndarray,
  ids: Sequence[str],
  class_names: Sequence[str] | None = None,
  metric: str = "dice",
) -> dict[str, Any]:
  """per_class [N, C-1] (NaN = excluded) -> the report dict (JSON-able): mean, sd and
  n_cases over the case means, per_class, per_case {id: {"mean", metric: {class: v}}}."""
  per_class = np.asarray(per_class, float).reshape(len(ids), -1)
  n_cls = per_class.shape[1]
  names = (
    list(class_names)[1:] if class_names is not None else [f"class{c}" for c in range(1, n_cls + 1)]
  )
  with warnings.catch_warnings():  # all-NaN rows/columns stay NaN, silently
    warnings.simplefilter("ignore", RuntimeWarning)
    case_mean = np.nanmean(per_class, axis=1)
    cls_mean = np.nanmean(per_class, axis=0)
  scored = case_mean[~np.isnan(case_mean)]
  sd = float(np.std(scored, ddof=1)) if len(scored) > 1 else 0.0
  return {
    "mean": float(scored.mean()) if len(scored) else float("nan"),
    "sd": sd,
    "n_cases": int(len(scored)),
    "per_class": {n: _f(v) for n, v in zip(names, cls_mean)},
    "per_case": {
      cid: {"mean": _f(m), metric: {n: _f(v) for n, v in zip(names, row)}}
      for cid, m, row in zip(ids, case_mean, per_class)
    },
  }


def _f(v: float) -> float | None:
  return None if np.isnan(v) else float(v)


def evaluate(
  module: nn.Module,
  variables: Any,
  volumes: Mapping[str, Any],
  ids: Sequence[str],
  *,
  roi: int | Sequence[int],
  num_classes: int,
  class_names: Sequence[str] | None = None,
  out_dir: str | os.PathLike | None = None,
  overlap: float = 0.5,
  mode: str = "gaussian",
  sw_batch_size: int = 4,
  nsd_tolerance_mm: float | None = None,
) -> dict[str, Any]:
  """Sliding-window predictions of `ids` (volumes with labels) scored by `summarize`:
  the Dice report dict at the top level.

  With nsd_tolerance_mm, also "hd95" and "nsd" (each a `summarize` dict over the same
  cases; "hd95" adds n_one_sided, "nsd" its tolerance_mm), on the voxel size of each
  volume's `meta["spacing"]` (mm along the array axes). With out_dir, writes
  `<out_dir>/<id>.nii.gz` in the source grid (needs Volume.meta).
  """
  dice, hd95, nsd = [], [], []
  for cid, pred in iter_predictions(
    module,
    variables,
    volumes,
    ids,
    roi=roi,
    overlap=overlap,
    mode=mode,
    sw_batch_size=sw_batch_size,
  ):
    vol = volumes[cid]
    if getattr(vol, "label", None) is None:
      raise ValueError(f"case {cid!r} has no label to evaluate against")
    dice.append(dice_per_class(pred, vol.label, num_classes))
    if nsd_tolerance_mm is not None:
      spacing = (getattr(vol, "meta", None) or {}).get("spacing")
      if spacing is None:
        raise ValueError(f"case {cid!r}: no meta['spacing'] for the surface metrics")
      h, n = surface_metrics(pred, vol.label, num_classes, spacing, nsd_tolerance_mm)
      hd95.append(h)
      nsd.append(n)
    if out_dir is not None:
      write_prediction(pred, vol, Path(out_dir) / f"{cid}.nii.gz")
  dice, hd95, nsd = (_stack(x, num_classes) for x in (dice, hd95, nsd))
  out = summarize(dice, ids, class_names)
  if nsd_tolerance_mm is not None:
    out["hd95"] = summarize(hd95, ids, class_names, "hd95")
    # HD95 NaN where Dice is not: the class is in exactly one of prediction and label.
    out["hd95"]["n_one_sided"] = int((np.isnan(hd95) & ~np.isnan(dice)).sum())
    out["nsd"] = summarize(nsd, ids, class_names, "nsd")
    out["nsd"]["tolerance_mm"] = float(nsd_tolerance_mm)
  return out


def _stack(rows: list[np.ndarray], num_classes: int) -> np.ndarray:
  """[N, C-1] from N rows of [C-1]; [0, C-1] when there are none."""
  return np.stack(rows) if rows else np.zeros((0, num_classes - 1))


def write_prediction(pred: np.ndarray, volume: Any, path: str | os.PathLike) -> Path:
  """Labels [D, H, W] in the preprocessed grid -> NIfTI in the source geometry."""
  from assft_jax.data.io import save_prediction

  meta = getattr(volume, "meta", None)
  if not meta:
    raise ValueError(f"{path}: the volume has no meta (source geometry) to write NIfTI")
  return save_prediction(np.asarray(pred), meta, path)
