"""Who labels the queried cases: the dataset's ground truth, or people.

The manifest oracle writes `to_annotate.csv` and raises `AnnotationPending` (the CLI
exits with code 3) until every queried case has a valid label file under
`--labels_dir`; a rerun of the same command then continues from that round.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from assft_jax.errors import EXIT_PENDING, AssftError

LABEL_SUFFIX = ".nii.gz"


class AnnotationPending(AssftError, RuntimeError):
  """Queried cases still need (valid) label files; the message says which and where."""

  exit_code = EXIT_PENDING
  prefix = ""


def manifest_rows(
  ids: Sequence[str], images: Mapping[str, Path], labels_dir: Path
) -> list[tuple[str, str, str]]:
  return [(i, str(images[i]), str(Path(labels_dir) / f"{i}{LABEL_SUFFIX}")) for i in ids]


def write_manifest(path: Path, rows: Sequence[tuple[str, str, str]]) -> None:
  buf = io.StringIO()
  w = csv.writer(buf)
  w.writerow(["case_id", "image", "label"])
  w.writerows(rows)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp")
  tmp.write_text(buf.getvalue())
  tmp.replace(path)


def link_for_annotators(rows: Sequence[tuple[str, str, str]], annotation_dir: Path) -> None:
  """Symlinks the queried images into one folder (copies where links are not allowed)."""
  annotation_dir = Path(annotation_dir)
  annotation_dir.mkdir(parents=True, exist_ok=True)
  for _, image, _ in rows:
    dst = annotation_dir / Path(image).name
    if dst.exists() or dst.is_symlink():
      continue
    try:
      os.symlink(Path(image).resolve(), dst)
    except OSError:
      shutil.copy2(image, dst)


def collect_labels(
  ids: Sequence[str],
  rows: Sequence[tuple[str, str, str]],
  load_label: Callable[[str, Path], np.ndarray],
  manifest: Path,
  round_: int,
) -> dict[str, np.ndarray]:
  """Loads every queried case's label file, or raises AnnotationPending listing all gaps.

  load_label(case_id, path) returns the preprocessed label [D, H, W] int32 or raises
  ValueError with the reason (shape mismatch, labels out of range, unreadable file).
  """
  missing, invalid, labels = [], [], {}
  for case_id, _, label in rows:
    path = Path(label)
    if not path.exists():
      missing.append(f"  {case_id}: {path}")
      continue
    try:
      labels[case_id] = load_label(case_id, path)
    except ValueError as e:
      invalid.append(f"  {case_id}: {path}: {e}")
  if missing or invalid:
    lines = [f"round {round_}: {len(ids)} queried case(s) need annotation; the list is {manifest}."]
    if missing:
      lines += [f"missing label files ({len(missing)}):", *missing]
    if invalid:
      lines += [f"invalid label files ({len(invalid)}):", *invalid]
    lines.append("Write the labels (same grid as the image), then rerun the same command.")
    raise AnnotationPending("\n".join(lines))
  return labels
