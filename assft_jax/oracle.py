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

Beside the images (in `--annotation_dir`, else in `round_XXX/`) it writes what the
annotator starts from: `labels.ctbl`, the class names as a 3D Slicer color table (every
round, round 0 too), and from round 1 on, per queried case, the current model's
prediction `<id>_preannotation.nii.gz` to correct and its voxel entropy
`<id>_uncertainty.nii.gz`, both in the scan's own grid (`viewer`). The current
model is F(r-1), the one whose scores chose the query. Round 0 has none: its query is the
init pick, and F(0)'s decoder is untrained, so its prediction would be noise to erase.
The manifest names each of these files in a column (empty where there is none). A rerun
while the round waits recomputes nothing: a case whose files exist, or whose label is
already there, is skipped.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from assft_jax import atomic, viewer
from assft_jax import data as data_lib
from assft_jax.engine.predict import Prediction
from assft_jax.errors import EXIT_PENDING, AssftError

LABEL_SUFFIX = ".nii.gz"
PREANNOTATION = "_preannotation.nii.gz"
UNCERTAINTY = "_uncertainty.nii.gz"
MANIFEST_COLUMNS = ("case_id", "image", "label", "preannotation", "uncertainty", "color_table")

Preannotator = Callable[[Sequence[str], int], Iterable[tuple[str, Prediction, dict]]]
"""predict(ids, r) -> (id, Prediction on the case's preprocessed grid, its Volume.meta)
for each of `ids`, by the model that chose round r's query."""


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
  """People label the queried cases; files are read from `labels_dir/<id>.nii.gz`.

  predict: the current model's outputs for the pre-annotations (none without it).
  """

  def __init__(
    self,
    dataset: data_lib.Dataset,
    pcfg: data_lib.PreprocessConfig,
    workdir: Path,
    labels_dir: Path,
    annotation_dir: Path | None = None,
    predict: Preannotator | None = None,
  ):
    self._dataset, self._pcfg = dataset, pcfg
    # Annotators' files hold the run's class indices (see `_read`): no value table.
    self._run_classes = dataclasses.replace(dataset, label_lut=None, mask_names=None)
    self._workdir, self._labels_dir = Path(workdir), Path(labels_dir)
    self._annotation_dir = Path(annotation_dir) if annotation_dir else None
    self._predict = predict

  def path_of(self, cid: str) -> Path:
    return self._labels_dir / f"{cid}{LABEL_SUFFIX}"

  def label(self, ids: Sequence[str], r: int) -> dict[str, np.ndarray]:
    """Every queried case's label, or AnnotationPending listing all the gaps."""
    ids = list(ids)
    manifest = self._workdir / f"round_{r:03d}" / "to_annotate.csv"
    extra = self._write_viewer_files(ids, r, self._annotation_dir or manifest.parent)
    rows = [(i, str(self._dataset.case(i).image), str(self.path_of(i)), *extra[i]) for i in ids]
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
      lines.append(
        "Write the labels (same grid as the image; values as in the color table, "
        f"{viewer.COLOR_TABLE}), then rerun the same command."
      )
      raise AnnotationPending("\n".join(lines))
    return labels

  def known(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
    return {cid: self._read(cid) for cid in ids}

  def _write_viewer_files(self, ids: list[str], r: int, folder: Path) -> dict[str, tuple[str, ...]]:
    """Writes the color table and the missing pre-annotation and uncertainty files into
    `folder`; returns id -> (pre-annotation, uncertainty, color table) paths for the
    manifest ("" where there is none)."""
    table = folder / viewer.COLOR_TABLE
    if not table.exists():
      viewer.write_color_table(table, self._dataset.class_names)
    if r == 0 or self._predict is None:
      return {i: ("", "", str(table)) for i in ids}
    files = {i: (folder / f"{i}{PREANNOTATION}", folder / f"{i}{UNCERTAINTY}") for i in ids}
    todo = [
      i for i in ids if not self.path_of(i).exists() and not all(p.exists() for p in files[i])
    ]
    if todo:
      for cid, pred, meta in self._predict(todo, r):
        pre, unc = files[cid]
        viewer.write_case(pred, meta, label=pre, uncertainty=unc)
    return {i: (str(files[i][0]), str(files[i][1]), str(table)) for i in ids}

  def _read(self, cid: str) -> np.ndarray:
    """The annotator's file, preprocessed onto the case's grid (validated on the way).

    Its values are the run's class indices, those of the color table and pre-annotations
    (0 .. C-1), not the dataset's own label values: under --keep_labels, --label_map or
    --drop_labels the two differ, and an annotator corrects the pre-annotation in place.
    """
    return data_lib.prepare_label(self._run_classes, cid, self.path_of(cid), self._pcfg)


def write_manifest(path: Path, rows: Sequence[Sequence[str]]) -> None:
  """rows: one per case, in MANIFEST_COLUMNS order."""
  buf = io.StringIO()
  w = csv.writer(buf)
  w.writerow(MANIFEST_COLUMNS)
  w.writerows(rows)
  atomic.write_text(path, buf.getvalue())


def read_manifest(path: Path) -> list[dict[str, str]]:
  """The rows of a `to_annotate.csv` as {column: value}."""
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def link_for_annotators(rows: Sequence[Sequence[str]], annotation_dir: Path) -> None:
  """Symlinks the queried images into one folder (copies where links are not allowed)."""
  annotation_dir = Path(annotation_dir)
  annotation_dir.mkdir(parents=True, exist_ok=True)
  for _, image, *_ in rows:
    dst = annotation_dir / Path(image).name
    if dst.exists() or dst.is_symlink():
      continue
    try:
      os.symlink(Path(image).resolve(), dst)
    except OSError:
      shutil.copy2(image, dst)
