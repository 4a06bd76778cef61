"""Index NIfTI datasets in the layouts users bring (MSD / AMOS22, FLARE21, nnU-Net raw,
generic images/ + labels/) behind one `Dataset` value.

Layout rules (first that matches, with layout="auto"):
  msd     dataset.json with a "training" list of {image, label} (MSD, AMOS22, nnU-Net v1;
          a listed path that is missing but exists with "_0000" is taken, as nnU-Net v1
          stores it)
  nnunet  dataset.json without "training" + imagesTr/*_0000.nii.gz (+ labelsTr/)
  flare21 TrainingImg/*_0000.nii.gz + TrainingMask/*.nii.gz
  atlas   <case>/ct.nii.gz + <case>/segmentations/<class>.nii.gz (AbdomenAtlas: one
          binary mask per class; classes = the mask names, sorted)
  generic images/*.nii[.gz] + labels/ with matching names (image "_0000" suffix allowed)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .classes import remap_classes
from .errors import DataError
from .validate import duplicate_problems, header_problems, problem_files, read_cases

LAYOUTS = ("msd", "nnunet", "flare21", "atlas", "generic")
FLARE21_CLASSES = ("background", "liver", "kidney", "spleen", "pancreas")
NII = (".nii.gz", ".nii")


@dataclass(frozen=True)
class Case:
  """One scan: `id` is the file name without extension and channel suffix."""

  id: str
  image: Path
  label: Path | None


@dataclass(frozen=True)
class Dataset:
  """cases in a stable order; class_names[0] is background.

  label_lut maps a label value in the files to the class index in class_names
  (after remapping/dropping); None means identity.
  """

  cases: tuple[Case, ...]
  class_names: tuple[str, ...]
  modality: str
  root: Path
  layout: str
  label_lut: tuple[int, ...] | None = None
  mask_names: tuple[str, ...] | None = None  # atlas layout: mask file k -> value k+1

  @property
  def ids(self) -> tuple[str, ...]:
    return tuple(c.id for c in self.cases)

  def case(self, cid: str) -> Case:
    for c in self.cases:
      if c.id == cid:
        return c
    raise KeyError(cid)

  @property
  def n_label_values(self) -> int:
    """Label files hold the values 0..n_label_values-1 (before the LUT)."""
    return len(self.label_lut) if self.label_lut else len(self.class_names)

  def class_index(self, values: np.ndarray) -> np.ndarray:
    """Label file values (checked integers) -> class indices, same shape, int32."""
    label = values.astype(np.int32)
    return np.asarray(self.label_lut, np.int32)[label] if self.label_lut else label


def load_index(
  data_dir: str | os.PathLike,
  layout: str = "auto",
  label_map: Mapping[str | int, str] | None = None,
  drop_labels: Sequence[str | int] = (),
  *,
  keep_labels: Sequence[str | int] = (),
  validate: str = "header",
  require_labels: bool = True,
  include: str | None = None,
  splits: Sequence[str] = ("training",),
) -> Dataset:
  r"""Index `data_dir`. validate: "none" | "header" (default: existence, readable
  headers, 3D, image/label shape + affine agreement, duplicate ids; no voxel is
  read) | "full" (also reads every voxel: NaN/inf, non-integer labels, labels outside
  the classes; slow on big datasets, the check CLI does the same).

  label_map renames classes ({old name or value: new name}; equal new names merge,
  "background" drops); drop_labels lists classes (name or value) that become
  background; keep_labels, the only classes that stay (see `data.classes`). Remaining
  classes are renumbered contiguously in their original order.
  Missing labels are errors unless require_labels=False (then Case.label is None).
  include: a regex; only case ids that fully match it are kept (e.g. AMOS22 MRI
  cases are r"amos_0[5-9]\d\d"). splits: the dataset.json lists read by the msd
  layout (AMOS22 keeps 100 labeled cases under "validation").
  Raises DataError listing every problem.
  """
  ds, problems = scan_index(
    data_dir,
    layout,
    label_map,
    drop_labels,
    keep_labels=keep_labels,
    validate=validate,
    require_labels=require_labels,
    include=include,
    splits=splits,
  )
  if problems:
    raise DataError(
      problems, header=f"{ds.root}: {len(problems)} problem(s) in {ds.layout} dataset"
    )
  return ds


def scan_index(
  data_dir,
  layout="auto",
  label_map=None,
  drop_labels=(),
  *,
  keep_labels=(),
  validate="header",
  require_labels=True,
  include=None,
  splits=("training",),
) -> tuple[Dataset, list[str]]:
  """Like load_index but returns (dataset, problems) instead of raising for
  per-file problems. Raises DataError only when no dataset can be read at all."""
  root = Path(data_dir)
  if not root.is_dir():
    raise DataError(f"{root}: data directory not found")
  if layout == "auto":
    layout = detect_layout(root)
  if layout not in LAYOUTS:
    raise DataError(f"--layout: unknown layout '{layout}' (choose from {', '.join(LAYOUTS)}, auto)")
  if validate not in ("none", "header", "full"):
    raise DataError(f"validate: unknown mode '{validate}' (none, header, full)")
  if layout == "msd":
    cases, classes, modality, problems = _read_msd(root, require_labels, splits)
  else:
    cases, classes, modality, problems = _READERS[layout](root, require_labels)
  if include is not None:
    try:
      pattern = re.compile(include)
    except re.error as e:
      raise DataError(f"include: bad regex '{include}' ({e})") from None
    keep = {str(c.image) for c in cases if pattern.fullmatch(c.id)}
    problems = [p for p in problems if not _about_dropped(p, cases, keep)]
    cases = [c for c in cases if str(c.image) in keep]
    if not cases:
      problems.append(f"{root}: no case id matches include='{include}'")
  problems += duplicate_problems([c.id for c in cases], [c.image for c in cases])
  masks = tuple(classes[1:]) if layout == "atlas" else None
  if validate != "none":
    for c in cases:
      problems += header_problems(c.image, c.label, masks)
  names, lut = remap_classes(classes, label_map, drop_labels, keep_labels)
  ds = Dataset(tuple(cases), names, modality, root, layout, lut, masks)
  if validate == "full":
    skip = problem_files(problems)  # a file with a header problem is not read again
    for _, voxels in read_cases(ds.cases, ds.n_label_values, masks, skip):
      problems += voxels.problems
  return ds, problems


def _about_dropped(problem: str, cases, keep) -> bool:
  """A listing problem about a case that `include` leaves out."""
  return any(
    str(c.image) not in keep
    and (
      problem.startswith(str(c.image)) or (c.label is not None and problem.startswith(str(c.label)))
    )
    for c in cases
  )


def detect_layout(root: Path) -> str:
  meta = root / "dataset.json"
  if meta.is_file():
    if "training" in _read_json(meta):
      return "msd"
    if (root / "imagesTr").is_dir():
      return "nnunet"
  if (root / "TrainingImg").is_dir():
    return "flare21"
  if _atlas_dirs(root):
    return "atlas"
  if (root / "images").is_dir():
    return "generic"
  raise DataError(
    f"{root}: no known layout (looked for dataset.json with 'training', "
    "imagesTr/ + dataset.json, TrainingImg/, */ct.nii.gz, images/)"
  )


def _read_json(path: Path) -> dict:
  try:
    return json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise DataError(f"{path}: unreadable JSON ({e})") from None


def strip_nii(name: str) -> str:
  for ext in NII:
    if name.endswith(ext):
      return name[: -len(ext)]
  return name


def case_id(path: Path) -> str:
  stem = strip_nii(path.name)
  return stem[:-5] if stem.endswith("_0000") else stem


def parse_labels(labels: Mapping, where: Path) -> list[str]:
  """MSD/nnU-Net v1 {"0": name} or nnU-Net v2 {name: 0} -> names indexed by value
  (gaps become "label_<k>")."""
  by_value: dict[int, str] = {}
  try:
    for k, v in labels.items():
      if isinstance(v, (int, float)) and not isinstance(v, bool):
        by_value[int(v)] = str(k)
      elif isinstance(v, (list, tuple)):
        raise DataError(f"{where}: region-based label '{k}': {v} is not supported")
      else:
        by_value[int(k)] = str(v)
  except ValueError:
    raise DataError(f"{where}: 'labels' must map value->name or name->value") from None
  if not by_value or min(by_value) != 0:
    raise DataError(f"{where}: 'labels' must declare value 0 (background)")
  return [by_value.get(i, f"label_{i}") for i in range(max(by_value) + 1)]


def _modality(meta: Mapping) -> str:
  mod = meta.get("modality") or meta.get("channel_names") or {}
  if isinstance(mod, Mapping):
    return str(mod.get("0", next(iter(mod.values()), "unknown")))
  return str(mod)


def _read_msd(root: Path, require_labels: bool, splits: Sequence[str] = ("training",)):
  meta_path = root / "dataset.json"
  meta = _read_json(meta_path)
  classes = parse_labels(meta.get("labels", {}), meta_path)
  cases, problems = [], []
  for split in splits:
    if split not in meta:
      problems.append(f"{meta_path}: no '{split}' list")
    for i, entry in enumerate(meta.get(split, [])):
      if isinstance(entry, str):  # MSD "test" lists bare image paths
        entry = {"image": entry}
      if not isinstance(entry, Mapping) or "image" not in entry:
        problems.append(f"{meta_path}: {split}[{i}] has no 'image'")
        continue
      image = _resolve(root, entry["image"], channel=True)
      label = _resolve(root, entry["label"]) if entry.get("label") else None
      if label is not None and not label.exists():
        if require_labels:
          problems.append(f"{image}: missing label ({label} not found)")
        label = None
      elif label is None and require_labels:
        problems.append(f"{image}: missing label ({split}[{i}] lists none)")
      cases.append(Case(case_id(image), image, label))
  return cases, classes, _modality(meta), problems


def _resolve(root: Path, rel: str, channel: bool = False) -> Path:
  path = (root / rel).resolve() if not os.path.isabs(rel) else Path(rel)
  if channel and not path.exists():
    alt = path.with_name(strip_nii(path.name) + "_0000" + path.name[len(strip_nii(path.name)) :])
    if alt.exists():
      return alt
  return path


def _pair_dirs(img_dir: Path, lab_dir: Path, pattern_suffix: str, require_labels: bool):
  cases, problems = [], []
  images = sorted(
    p for p in img_dir.iterdir() if p.name.endswith(NII) and not p.name.startswith(".")
  )
  for image in images:
    stem = strip_nii(image.name)
    if pattern_suffix and not stem.endswith(pattern_suffix):
      continue  # other channels (_0001, ...) of a multi-channel case
    cid = case_id(image)
    label = next((lab_dir / (cid + e) for e in NII if (lab_dir / (cid + e)).exists()), None)
    if label is None and require_labels:
      problems.append(f"{image}: missing label (expected {lab_dir / (cid + '.nii.gz')})")
    cases.append(Case(cid, image, label))
  if not images:
    problems.append(f"{img_dir}: no NIfTI images found")
  return cases, problems


def _read_nnunet(root: Path, require_labels: bool):
  meta_path = root / "dataset.json"
  meta = _read_json(meta_path)
  classes = parse_labels(meta.get("labels", {}), meta_path)
  cases, problems = _pair_dirs(root / "imagesTr", root / "labelsTr", "_0000", require_labels)
  return cases, classes, _modality(meta), problems


def _read_flare21(root: Path, require_labels: bool):
  cases, problems = _pair_dirs(root / "TrainingImg", root / "TrainingMask", "_0000", require_labels)
  return cases, list(FLARE21_CLASSES), "CT", problems


def _read_generic(root: Path, require_labels: bool):
  cases, problems = _pair_dirs(root / "images", root / "labels", "", require_labels)
  meta_path = root / "dataset.json"
  if meta_path.is_file():
    meta = _read_json(meta_path)
    return cases, parse_labels(meta.get("labels", {}), meta_path), _modality(meta), problems
  # No declaration: classes are the values found in the label files (reads voxels).
  from .io import read_header

  top = 0
  for c in cases:
    if c.label is not None:
      try:
        top = max(top, int(np.nanmax(np.asarray(read_header(c.label).dataobj))))
      except (DataError, ValueError):
        pass  # reported by the header checks
  return cases, ["background"] + [f"class_{k}" for k in range(1, top + 1)], "unknown", problems


def _atlas_dirs(root: Path) -> list[Path]:
  return sorted(d for d in root.iterdir() if d.is_dir() and (d / "ct.nii.gz").is_file())


def _read_atlas(root: Path, require_labels: bool):
  cases, problems, names = [], [], set()
  for d in _atlas_dirs(root):
    seg = d / "segmentations"
    if seg.is_dir():
      names |= {strip_nii(p.name) for p in seg.iterdir() if p.name.endswith(NII)}
    elif require_labels:
      problems.append(f"{seg}: missing label (no segmentations/ folder)")
    cases.append(Case(d.name, d / "ct.nii.gz", seg if seg.is_dir() else None))
  if not cases:
    problems.append(f"{root}: no <case>/ct.nii.gz found")
  return cases, ["background"] + sorted(names), "CT", problems


_READERS = {
  "atlas": _read_atlas,
  "msd": _read_msd,
  "nnunet": _read_nnunet,
  "flare21": _read_flare21,
  "generic": _read_generic,
}


def case_groups(dataset: Dataset, fields: Sequence[str]) -> dict[str, str]:
  """id -> stratum, the values of `fields` joined by "/", from dataset.json's optional
  "cases" table ({id: {field: value}}; the phantom writes scanner and hard there, a
  user may add e.g. site or vendor). For a stratified test split (pool.draw_split).
  The field "intensity_group" is derived from the images instead (`data.intensity`: the
  cases' orders of magnitude of raw intensity), for data without such a table.
  Raises DataError naming the file, field and case when one is missing."""
  from .intensity import GROUP_FIELD, dataset_groups

  path, ids = dataset.root / "dataset.json", dataset.ids
  parts = {
    f: (
      dataset_groups({c.id: c.image for c in dataset.cases}, ids)
      if f == GROUP_FIELD
      else table_groups(path, ids, [f], "--stratify_by")
    )
    for f in dict.fromkeys(fields)
  }
  return {c: "/".join(parts[f][c] for f in fields) for c in ids}


def table_groups(
  path: Path, ids: Sequence[str], fields: Sequence[str], needed_by: str
) -> dict[str, str]:
  """id -> the values of `fields` joined by "/" for each of `ids`, from the "cases" table
  of the dataset.json at `path`; DataError naming the file, field and case (and the flag
  `needed_by`) when one is missing."""
  table = _read_json(path).get("cases") if path.is_file() else None
  if not isinstance(table, dict):
    raise DataError(
      f"{path}: no 'cases' table with per-case {', '.join(fields)} (needed by {needed_by})"
    )
  out = {}
  for cid in ids:
    row = table.get(cid)
    missing = [f for f in fields if not isinstance(row, dict) or f not in row]
    if missing:
      raise DataError(
        f"{path}: case {cid!r} has no {', '.join(missing)} in its 'cases' entry "
        f"(needed by {needed_by})"
      )
    out[cid] = "/".join(str(row[f]) for f in fields)
  return out
