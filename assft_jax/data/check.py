"""Dataset check: every problem at once, or a fingerprint when the data is usable.

    python -m assft_jax.data.check DATA_DIR [--layout auto] [--drop_labels a,b]

Reads every voxel (NaN/inf, non-integer labels, labels outside the declared classes)
on top of the header checks of `load_index`. Exit 1 after printing all problems (one
line per file, on stderr, no traceback); exit 0 prints the fingerprint: number of
cases, shapes, spacings, intensity percentiles, class voxel frequencies.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np

from .datasets import Dataset, scan_index
from .errors import DataError
from .io import load_label, load_volume
from .validate import image_voxel_problems, label_voxel_problems

PERCENTILES = (0.5, 5, 50, 95, 99.5)
SAMPLES_PER_CASE = 20_000  # voxels per image kept for the intensity percentiles


def voxel_problems(ds: Dataset, skip: set[str] = frozenset()) -> list[str]:
  """Voxel-level problems of every case (cases whose files are in `skip` excluded)."""
  return _scan(ds, skip)[0]


def fingerprint(ds: Dataset) -> dict:
  """Summary statistics of a dataset (reads every voxel)."""
  problems, fp = _scan(ds, set())
  if problems:
    raise DataError(problems)
  return fp


def _scan(ds: Dataset, skip) -> tuple[list[str], dict]:
  problems: list[str] = []
  n_values = len(ds.label_lut) if ds.label_lut else len(ds.class_names)
  shapes, spacings, samples = [], [], []
  counts = np.zeros(len(ds.class_names), np.int64)
  present = np.zeros(len(ds.class_names), np.int64)
  for i, case in enumerate(ds.cases):
    if str(case.image) in skip or (case.label is not None and str(case.label) in skip):
      continue
    try:
      image, meta = load_volume(case.image)
    except DataError as e:
      problems += e.problems
      continue
    bad = image_voxel_problems(case.image, image)
    problems += bad
    shapes.append(image.shape)
    spacings.append(meta["spacing"])
    if not bad:
      rng = np.random.default_rng(i)
      flat = image.reshape(-1)
      samples.append(flat[rng.integers(0, flat.size, min(flat.size, SAMPLES_PER_CASE))])
    if case.label is None:
      continue
    try:
      label, _ = load_label(case.label, None, ds.mask_names)
    except DataError as e:
      problems += e.problems
      continue
    lab_bad = label_voxel_problems(case.label, label, n_values)
    if label.shape != image.shape:
      lab_bad.append(f"{case.label}: label shape {label.shape} differs from image {image.shape}")
    problems += lab_bad
    if not lab_bad:
      values = label.astype(np.int64)
      if ds.label_lut:
        values = np.asarray(ds.label_lut)[values]
      c = np.bincount(values.reshape(-1), minlength=len(ds.class_names))
      counts += c
      present += c > 0
  return problems, _summary(ds, shapes, spacings, samples, counts, present)


def _summary(ds, shapes, spacings, samples, counts, present) -> dict:
  def stats(rows):
    a = np.asarray(rows, float)
    if a.size == 0:
      return {}
    return {
      k: [round(float(v), 3) for v in f(a, axis=0)]
      for k, f in (("min", np.min), ("median", np.median), ("max", np.max))
    }

  allv = np.concatenate(samples) if samples else np.zeros(0)
  total = max(int(counts.sum()), 1)
  return {
    "root": str(ds.root),
    "layout": ds.layout,
    "modality": ds.modality,
    "n_cases": len(ds.cases),
    "n_labeled": sum(c.label is not None for c in ds.cases),
    "shape": stats(shapes),
    "spacing": stats(spacings),
    "intensity_percentiles": (
      {str(p): round(float(v), 3) for p, v in zip(PERCENTILES, np.percentile(allv, PERCENTILES))}
      if allv.size
      else {}
    ),
    "class_voxel_fraction": {n: round(int(c) / total, 6) for n, c in zip(ds.class_names, counts)},
    "class_case_count": {n: int(p) for n, p in zip(ds.class_names, present)},
  }


def main(argv: Sequence[str] | None = None) -> int:
  ap = argparse.ArgumentParser(
    prog="python -m assft_jax.data.check",
    description="Validate a NIfTI dataset and print its fingerprint.",
  )
  ap.add_argument("data_dir")
  ap.add_argument("--layout", default="auto")
  ap.add_argument("--drop_labels", default="", help="comma-separated class names/values")
  ap.add_argument(
    "--allow_unlabeled", action="store_true", help="cases without a label are fine (unlabeled pool)"
  )
  ap.add_argument("--json", action="store_true", help="print the fingerprint as JSON")
  args = ap.parse_args(argv)
  drop = [d for d in args.drop_labels.split(",") if d]
  fp = None
  try:
    ds, problems = scan_index(
      args.data_dir,
      args.layout,
      drop_labels=drop,
      validate="header",
      require_labels=not args.allow_unlabeled,
    )
    bad = {p.split(": ")[0] for p in problems}
    voxel, fp = _scan(ds, bad)  # one pass: voxel problems and the fingerprint
    problems += voxel
  except DataError as e:
    problems = list(e.problems)
  if problems:
    for line in problems:
      print(line, file=sys.stderr)
    print(f"{len(problems)} problem(s) in {args.data_dir}", file=sys.stderr)
    return 1
  print(json.dumps(fp) if args.json else format_fingerprint(fp))
  return 0


def format_fingerprint(fp: dict) -> str:
  """A few human-readable lines."""

  def rng(d):
    return "  ".join(f"{k} {v}" for k, v in d.items())

  lines = [
    f"{fp['root']}: {fp['layout']} layout, modality {fp['modality']}, "
    f"{fp['n_cases']} cases ({fp['n_labeled']} labeled)",
    f"shape    {rng(fp['shape'])}",
    f"spacing  {rng(fp['spacing'])}",
    "intensity percentiles  "
    + "  ".join(f"p{k}={v}" for k, v in fp["intensity_percentiles"].items()),
    "class voxel fraction (cases containing it):",
  ]
  lines += [
    f"  {n:<16} {f:.6f} ({fp['class_case_count'][n]})"
    for n, f in fp["class_voxel_fraction"].items()
  ]
  return "\n".join(lines)


if __name__ == "__main__":
  sys.exit(main())
