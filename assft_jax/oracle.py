"""Who labels the queried cases: the dataset's ground truth, or people.

An oracle answers two questions of the loop, both with preprocessed labels
{case id: [D, H, W] int32} on the grid of the case's preprocessed image:
  label(ids, r)  the cases queried in round r;
  known(ids)     the cases labeled in earlier rounds (their labels were checked then).

`GroundTruthOracle` reads the dataset's own labels (a simulation, as in the paper).
`ManifestOracle` is for people: it writes `round_XXX/to_annotate.csv` (and links the
queried images into `--annotation_dir`), then raises `AnnotationPending` (the CLI exits
with code 3) until every queried case has a valid label file under `--labels_dir`; a
rerun of the same command then continues from that round.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from assft_jax import atomic
from assft_jax import data as data_lib
from assft_jax.errors import EXIT_PENDING, AssftError

LABEL_SUFFIX = ".nii.gz"


class AnnotationPending(AssftError, RuntimeError):
  """Queried cases still need (valid) label files; the message says which and where."""

  exit_code = EXIT_PENDING
  prefix = ""


class Oracle(Protocol):
  def label(self, ids: Sequence[str], r: int) -> dict[str, np.ndarray]: ...

  def known(self, ids: Sequence[str]) -> dict[str, np.ndarray]: ...


class GroundTruthOracle:
  """The dataset's own labels, already preprocessed with the images."""

  def __init__(self, volumes: Mapping[str, data_lib.Volume]):
    self._volumes = volumes

  def label(self, ids: Sequence[str], r: int) -> dict[str, np.ndarray]:
    del r  # ground truth does not depend on the round
    return self.known(ids)

  def known(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
    missing = [i for i in ids if self._volumes[i].label is None]
    if missing:
      raise data_lib.DataError(
        [f"{i}: no ground-truth label; use --oracle=manifest" for i in missing]
      )
    return {i: self._volumes[i].label for i in ids}


class ManifestOracle:
  """People label the queried cases; files are read from `labels_dir/<id>.nii.gz`."""

  def __init__(
    self,
    dataset: data_lib.Dataset,
    pcfg: data_lib.PreprocessConfig,
    workdir: Path,
    labels_dir: Path,
    annotation_dir: Path | None = None,
  ):
    self._dataset, self._pcfg = dataset, pcfg
    self._workdir, self._labels_dir = Path(workdir), Path(labels_dir)
    self._annotation_dir = Path(annotation_dir) if annotation_dir else None

  def path_of(self, cid: str) -> Path:
    return self._labels_dir / f"{cid}{LABEL_SUFFIX}"

  def label(self, ids: Sequence[str], r: int) -> dict[str, np.ndarray]:
    """Every queried case's label, or AnnotationPending listing all the gaps."""
    ids = list(ids)
    manifest = self._workdir / f"round_{r:03d}" / "to_annotate.csv"
    rows = [(i, str(self._dataset.case(i).image), str(self.path_of(i))) for i in ids]
    if not manifest.exists():
      write_manifest(manifest, rows)
      if self._annotation_dir is not None:
        link_for_annotators(rows, self._annotation_dir)
    missing, invalid, labels = [], [], {}
    for cid in ids:
      path = self.path_of(cid)
      if not path.exists():
        missing.append(f"  {cid}: {path}")
        continue
      try:
        labels[cid] = self._read(cid)
      except data_lib.DataError as e:
        invalid.append(f"  {cid}: {path}: {e}")
    if missing or invalid:
      lines = [f"round {r}: {len(ids)} queried case(s) need annotation; the list is {manifest}."]
      if missing:
        lines += [f"missing label files ({len(missing)}):", *missing]
      if invalid:
        lines += [f"invalid label files ({len(invalid)}):", *invalid]
      lines.append("Write the labels (same grid as the image), then rerun the same command.")
      raise AnnotationPending("\n".join(lines))
    return labels

  def known(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
    return {cid: self._read(cid) for cid in ids}

  def _read(self, cid: str) -> np.ndarray:
    """The annotator's file, preprocessed onto the case's grid (validated on the way)."""
    return data_lib.prepare_label(self._dataset, cid, self.path_of(cid), self._pcfg)


def write_manifest(path: Path, rows: Sequence[tuple[str, str, str]]) -> None:
  buf = io.StringIO()
  w = csv.writer(buf)
  w.writerow(["case_id", "image", "label"])
  w.writerows(rows)
  atomic.write_text(path, buf.getvalue())


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
