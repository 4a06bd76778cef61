"""Dataset check: every problem at once, or a fingerprint when the data is usable.

    python -m assft_jax.data.check DATA_DIR [--layout auto] [--drop_labels a,b]
        [--keep_labels a,b] [--label_map old:new,...]

Reads every voxel (NaN/inf, non-integer labels, labels outside the declared classes)
on top of the header checks of `load_index`. Exit 1 after printing all problems (one
line per file, on stderr, no traceback); exit 0 prints the fingerprint: number of
cases, shapes, spacings, intensity percentiles, the cases' intensity scales when they
form several groups (`data.intensity`), class voxel frequencies (of the classes left by
the class selection flags, which mean what the run's flags of the same names do).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np

from . import intensity
from .classes import parse_label_map
from .datasets import Dataset, scan_index
from .errors import DataError
from .validate import problem_files, read_cases

PERCENTILES = (0.5, 5, 50, 95, 99.5)
SAMPLES_PER_CASE = 20_000  # voxels per image kept for the intensity percentiles


def fingerprint(ds: Dataset) -> dict:
  """Summary statistics of a dataset (reads every voxel)."""
  problems, fp = _scan(ds, set())
  if problems:
    raise DataError(problems)
  return fp


def _scan(ds: Dataset, skip: set[str]) -> tuple[list[str], dict]:
  """Voxel problems and the fingerprint in one pass (files in `skip` left out)."""
  problems: list[str] = []
  shapes, spacings, samples, scales = [], [], [], {}
  counts = np.zeros(len(ds.class_names), np.int64)
  present = np.zeros(len(ds.class_names), np.int64)
  for i, voxels in read_cases(ds.cases, ds.n_label_values, ds.mask_names, skip):
    problems += voxels.problems
    if voxels.image is None:
      continue
    shapes.append(voxels.image.shape)
    spacings.append(voxels.meta["spacing"])
    if not voxels.image_problems:
      scales[ds.cases[i].id] = intensity.scale(voxels.image)
      rng = np.random.default_rng(i)
      flat = voxels.image.reshape(-1)
      samples.append(flat[rng.integers(0, flat.size, min(flat.size, SAMPLES_PER_CASE))])
    if voxels.label is not None and not voxels.label_problems:
      c = np.bincount(ds.class_index(voxels.label).reshape(-1), minlength=len(ds.class_names))
      counts += c
      present += c > 0
  return problems, _summary(ds, shapes, spacings, samples, scales, counts, present)


def _summary(ds, shapes, spacings, samples, scales, counts, present) -> dict:
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
    "intensity_groups": intensity.summary(scales) if scales else [],
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
    "--keep_labels", default="", help="the only classes kept (names/values); others: background"
  )
  ap.add_argument(
    "--label_map", default="", help="comma-separated old:new renames (equal names merge)"
  )
  ap.add_argument(
    "--allow_unlabeled", action="store_true", help="cases without a label are fine (unlabeled pool)"
  )
  ap.add_argument("--json", action="store_true", help="print the fingerprint as JSON")
  args = ap.parse_args(argv)
  words = lambda text: [w for w in text.split(",") if w]
  fp = None
  try:
    ds, problems = scan_index(
      args.data_dir,
      args.layout,
      parse_label_map(words(args.label_map)),
      words(args.drop_labels),
      keep_labels=words(args.keep_labels),
      validate="header",
      require_labels=not args.allow_unlabeled,
    )
    voxel, fp = _scan(ds, problem_files(problems))
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
    *_intensity_lines(fp.get("intensity_groups", [])),
    "class voxel fraction (cases containing it):",
  ]
  lines += [
    f"  {n:<16} {f:.6f} ({fp['class_case_count'][n]})"
    for n, f in fp["class_voxel_fraction"].items()
  ]
  return "\n".join(lines)


def _intensity_lines(groups: list[dict]) -> list[str]:
  """The cases' intensity scales (`data.intensity`); a note when they form several groups."""
  if len(groups) < 2:
    return []
  ratio = groups[-1]["median"] / max(groups[0]["median"], 1e-12)
  lines = [
    f"intensity scales: {len(groups)} groups of cases whose typical intensity (median of "
    f"their p{intensity.PERCENTILE:g}) differs by up to {ratio:,.0f}x:"
  ]
  lines += [f"  {g['name']:<28} {g['n']:>4} cases, median {g['median']:.4g}" for g in groups]
  lines.append(
    "  the paper pipeline (--pipeline=paper, the default) z-scores each volume, so the "
    "groups train together; --stratify_by=intensity_group keeps each group's share in the "
    "test split (and defines the power measurement's strata); a fixed intensity window "
    "(--pipeline=ctfm) would not suit them"
  )
  return lines


if __name__ == "__main__":
  sys.exit(main())
