"""Pre-annotations and status. Fast: the manifest oracle with a "model" whose prediction
is known, and status on a workdir written by hand. Slow, end to end under
--oracle=manifest on the smoke phantoms: the color table from round 0, the pre-annotation
and uncertainty map of each case queried in round 1 (in the scan's grid, the round-0
model's prediction), the manifest's columns, no recompute while the round waits, and
`status` (library and CLI) reporting it."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from assft_jax import atomic, components, engine, loop, models, oracle, viewer
from assft_jax import config as config_lib
from assft_jax import flags as run_flags
from assft_jax import workdir as wd_lib
from assft_jax.data import PreprocessConfig, load_index, prepare, save_prediction
from assft_jax.data.phantom import generate
from assft_jax.deploy import status
from assft_jax.engine.predict import from_logits
from assft_jax.errors import AssftError
from assft_jax.pool import Pool
from tests._run_helpers import ROOT, SMOKE


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("ph")
  ds = load_index(generate(tmp / "ph", "mr", 3, (16, 16, 16), seed=0))
  pcfg = PreprocessConfig(orientation="RAS")
  return ds, pcfg, prepare(ds, pcfg, tmp / "cache")


def test_oracle_writes_preannotations_once_in_the_source_grid(phantom, tmp_path):
  """The "model" predicts the preprocessed ground truth, so the pre-annotation written
  back must equal the label file on disk voxel for voxel."""
  ds, pcfg, vols = phantom
  calls = []

  def predict(ids, r):
    calls.append((list(ids), r))
    for cid in ids:
      logits = 3.0 * np.eye(len(ds.class_names))[np.asarray(vols[cid].label)]
      yield cid, from_logits(logits), vols[cid].meta

  labels, ann, wd = tmp_path / "labels", tmp_path / "ann", tmp_path / "wd"
  orc = oracle.ManifestOracle(ds, pcfg, wd, labels, ann, predict=predict)
  a, b, c = ds.ids
  with pytest.raises(oracle.AnnotationPending):
    orc.label([a], 0)
  assert calls == [] and (ann / "labels.ctbl").read_text() == viewer.color_table(ds.class_names)
  (row,) = _rows(wd / "round_000" / "to_annotate.csv")
  assert (row["preannotation"], row["uncertainty"]) == ("", "")

  with pytest.raises(oracle.AnnotationPending):
    orc.label([b, c], 1)
  assert calls == [([b, c], 1)]
  rows = _rows(wd / "round_001" / "to_annotate.csv")
  for r, cid in zip(rows, [b, c]):
    assert r["preannotation"] == str(ann / f"{cid}_preannotation.nii.gz")
    assert r["uncertainty"] == str(ann / f"{cid}_uncertainty.nii.gz")
    assert r["color_table"] == str(ann / "labels.ctbl")
    gt = nib.load(str(ds.case(cid).label))
    pre = nib.load(r["preannotation"])
    assert pre.shape == gt.shape
    np.testing.assert_allclose(pre.affine, gt.affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(pre.dataobj), np.asarray(gt.dataobj))
  stamp = (ann / f"{b}_preannotation.nii.gz").stat().st_mtime_ns

  with pytest.raises(oracle.AnnotationPending):  # a rerun while waiting: nothing computed
    orc.label([b, c], 1)
  assert len(calls) == 1 and (ann / f"{b}_preannotation.nii.gz").stat().st_mtime_ns == stamp
  # Once b is labelled, only c's lost pre-annotation is made again.
  labels.mkdir()
  shutil.copy(ds.case(b).label, labels / f"{b}.nii.gz")
  (ann / f"{b}_preannotation.nii.gz").unlink()
  (ann / f"{c}_uncertainty.nii.gz").unlink()
  with pytest.raises(oracle.AnnotationPending):
    orc.label([b, c], 1)
  assert calls[1:] == [([c], 1)] and (ann / f"{c}_uncertainty.nii.gz").is_file()

  # Without --annotation_dir the files sit beside the manifest.
  orc = oracle.ManifestOracle(ds, pcfg, tmp_path / "wd2", labels, predict=predict)
  with pytest.raises(oracle.AnnotationPending):
    orc.label([c], 1)
  rd = tmp_path / "wd2" / "round_001"
  (row,) = _rows(rd / "to_annotate.csv")
  assert row["preannotation"] == str(rd / f"{c}_preannotation.nii.gz")
  assert Path(row["preannotation"]).is_file() and (rd / "labels.ctbl").is_file()


def test_annotator_files_use_the_run_class_numbers_under_keep_labels(phantom, tmp_path):
  """With --keep_labels the run's classes are renumbered; annotators correct
  pre-annotations in those numbers, so their files are read in them (not as the
  dataset's own values) and a value outside the run's classes is refused."""
  ds, pcfg, _ = phantom
  keep = ds.class_names[1], ds.class_names[4]
  kept = load_index(ds.root, keep_labels=keep)
  cid = ds.ids[0]
  gt = nib.load(str(ds.case(cid).label))
  values = np.asarray(gt.dataobj).astype(np.int16)
  # Run numbering by hand: background 0, then the kept classes in dataset order.
  run = np.zeros_like(values)
  run[values == 1], run[values == 4] = 1, 2
  labels = tmp_path / "labels"
  labels.mkdir()
  nib.save(nib.Nifti1Image(run, gt.affine), str(labels / f"{cid}.nii.gz"))
  orc = oracle.ManifestOracle(kept, pcfg, tmp_path / "wd", labels)
  want = prepare(kept, pcfg, tmp_path / "cache")[cid].label  # the dataset's label, remapped
  np.testing.assert_array_equal(orc.known([cid])[cid], want)

  run[0, 0, 0] = 3  # no class 3 in a 3-class run
  nib.save(nib.Nifti1Image(run, gt.affine), str(labels / f"{cid}.nii.gz"))
  with pytest.raises(oracle.AnnotationPending, match=cid):
    orc.label([cid], 1)


def test_status_of_a_workdir_written_by_hand(tmp_path):
  wd = wd_lib.open_workdir(config_lib.RunConfig(workdir=str(tmp_path / "wd")))
  pool = Pool(
    labeled={"a": 0, "b": 1}, unlabeled=("c", "d", "e"), excluded=("c",), pseudo=("c",), test=("t",)
  )
  atomic.write_json(wd_lib.round_dir(wd, 1) / "pool.json", pool.to_json())
  for r in (0, 1):
    wd_lib.mark_done(wd, r)
  labels = tmp_path / "labels"
  labels.mkdir()
  (labels / "d.nii.gz").write_bytes(b"x")
  rows = [
    (cid, f"/img/{cid}.nii.gz", str(labels / f"{cid}.nii.gz"), f"/ann/{cid}_pre", "", "")
    for cid in "de"
  ]
  oracle.write_manifest(wd_lib.round_dir(wd, 2) / "to_annotate.csv", rows)
  rounds = [{"round": 0, "dice_mean": 0.25}, {"round": 1, "dice_mean": 0.625}]
  atomic.write_json(wd / "summary.json", {"rounds": rounds, "complete": False})
  st = status.read_status(wd)
  assert (st.done, st.rounds, st.pending_round, st.dice, st.dice_round) == (1, 5, 2, 0.625, 1)
  assert st.counts == {"labeled": 2, "pseudo": 1, "excluded": 1, "unlabeled": 3, "test": 1}
  assert [(w.case_id, w.present) for w in st.waiting] == [("d", True), ("e", False)]
  assert status.format_status(st).splitlines() == [
    f"run {wd} (assft): rounds done 0..1 of 0..5",
    "pool: labeled 2, pseudo 1, excluded 1, unlabeled 3, test 1",
    "last Dice: 0.6250 (round 1, test split)",
    "round 2 waits for annotators: 1 of 2 label file(s) missing "
    f"(list: {wd}/round_002/to_annotate.csv)",
    f"  d: present {labels}/d.nii.gz  start from /ann/d_pre",
    f"  e: MISSING {labels}/e.nii.gz  start from /ann/e_pre",
  ]
  text = status.format_status(st)
  proc = subprocess.run(
    [sys.executable, "-m", "experiments.status", str(wd)],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0 and proc.stdout.strip() == text, proc.stderr[-2000:]
  proc = subprocess.run(
    [sys.executable, "-m", "experiments.status", str(tmp_path)],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert f"error: {tmp_path}: not a run's workdir" in proc.stderr


def _rows(manifest: Path) -> list[dict[str, str]]:
  with open(manifest, newline="") as f:
    return list(csv.DictReader(f))


def _ground_truth_paths(cache: Path) -> dict[str, Path]:
  root = next(cache.glob("phantom_mr_*"))
  meta = json.loads((root / "dataset.json").read_text())
  return {Path(t["label"]).name.replace(".nii.gz", ""): root / t["label"] for t in meta["training"]}


@pytest.mark.slow  # round 0 trains, round 1 queries
def test_manifest_run_writes_preannotations_and_status_reports(tmp_path):
  labels, ann, wd, cache = (tmp_path / n for n in ("labels", "to_label", "wd", "cache"))
  cfg = run_flags.parse(
    [
      f"--flagfile={SMOKE}",
      f"--workdir={wd}",
      f"--cache_dir={cache}",
      "--oracle=manifest",
      f"--labels_dir={labels}",
      f"--annotation_dir={ann}",
      "--rounds=1",
      "--nossft",
    ]
  )
  with pytest.raises(oracle.AnnotationPending):
    loop.run(cfg)
  # Round 0: the color table, no pre-annotation (F(0)'s decoder is untrained).
  (row,) = _rows(wd / "round_000" / "to_annotate.csv")
  assert list(row) == ["case_id", "image", "label", "preannotation", "uncertainty", "color_table"]
  assert row["preannotation"] == row["uncertainty"] == ""
  assert row["color_table"] == str(ann / "labels.ctbl")
  data = components.open_data(cfg, wd)
  names = data.dataset.class_names
  table = (ann / "labels.ctbl").read_text().splitlines()
  assert table[0].startswith("# Color table file") and table[1] == f"# {len(names)} values"
  assert [line.split()[:2] for line in table[2:]] == [[str(k), n] for k, n in enumerate(names)]
  st = status.read_status(wd)
  assert st.done is None and st.pending_round == 0 and [w.present for w in st.waiting] == [False]

  gt = _ground_truth_paths(cache)
  labels.mkdir()
  shutil.copy(gt[row["case_id"]], row["label"])
  with pytest.raises(oracle.AnnotationPending):
    loop.run(cfg)  # round 0 trains; round 1 queries two cases and waits
  rows = _rows(wd / "round_001" / "to_annotate.csv")
  assert len(rows) == 2
  ids = [r["case_id"] for r in rows]
  # The independent path: round 0's saved network, the run's prepared volumes, the
  # evaluation's argmax and writer.
  module, variables = models.load_pretrained(wd_lib.model_dir(wd, 0))
  ref = engine.predict_labels(
    module, variables, data.volumes, ids, **components.window_settings(cfg)
  )
  stamps = {}
  for r in rows:
    cid = r["case_id"]
    pre, unc = Path(r["preannotation"]), Path(r["uncertainty"])
    assert (pre, unc) == (ann / f"{cid}_preannotation.nii.gz", ann / f"{cid}_uncertainty.nii.gz")
    src = nib.load(r["image"])
    want = save_prediction(ref[cid], data.volumes[cid].meta, tmp_path / "ref" / f"{cid}.nii.gz")
    for path in (pre, unc):
      img = nib.load(str(path))
      assert img.shape == src.shape
      np.testing.assert_allclose(img.affine, src.affine, atol=1e-6)
      stamps[path] = path.stat().st_mtime_ns
    np.testing.assert_array_equal(
      np.asarray(nib.load(str(pre)).dataobj), np.asarray(nib.load(str(want)).dataobj)
    )
    h = np.asarray(nib.load(str(unc)).dataobj)
    assert h.dtype == np.float32 and h.min() >= 0 and h.max() <= math.log(len(names)) + 1e-6
    assert h.max() > 0  # an entropy map, not the zero fill
    assert r["color_table"] == str(ann / "labels.ctbl")

  # A rerun while the round waits recomputes and rewrites nothing.
  with pytest.raises(oracle.AnnotationPending):
    loop.run(cfg)
  assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

  split = json.loads((wd / "split.json").read_text())
  st = status.read_status(wd)
  assert st.done == 0 and st.pending_round == 1
  assert st.counts == {
    "labeled": 1,
    "pseudo": 0,
    "excluded": 0,
    "unlabeled": len(split["pool"]) - 1,
    "test": len(split["test"]),
  }
  assert [(w.case_id, w.label, w.present) for w in st.waiting] == [
    (cid, labels / f"{cid}.nii.gz", False) for cid in ids
  ]
  summary = json.loads((wd / "summary.json").read_text())
  text = status.format_status(st)
  assert "round 1 waits for annotators: 2 of 2 label file(s) missing" in text
  assert f"last Dice: {summary['rounds'][0]['dice_mean']:.4f} (round 0" in text
  for cid in ids:
    assert f"{cid}: MISSING {labels / cid}.nii.gz" in text


def test_status_refuses_a_folder_that_is_not_a_workdir(tmp_path):
  with pytest.raises(AssftError, match=f"{tmp_path}: not a run's workdir"):
    status.read_status(tmp_path)


def test_color_table_is_slicers_format():
  """Header, `index name R G B A`, spaces to underscores, background transparent."""
  lines = viewer.color_table(["background", "left kidney", "liver"]).splitlines()
  assert lines[:2] == ["# Color table file labels.ctbl", "# 3 values"]
  assert lines[2] == "0 background 0 0 0 0"
  idx, name, *rgba = lines[3].split()
  assert (idx, name, rgba[3]) == ("1", "left_kidney", "255") and len(rgba) == 4
  assert lines[3].split()[2:5] != lines[4].split()[2:5]  # distinct colors
