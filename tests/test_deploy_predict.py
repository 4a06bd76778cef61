"""The predict command: files in the source grid and affine, labels back on the source
voxels, bad inputs named one line each, nothing overwritten unasked, and the run's own
model and preprocessing read from its workdir."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from assft_jax import atomic, engine, viewer
from assft_jax import config as config_lib
from assft_jax import workdir as wd_lib
from assft_jax.data import PreprocessConfig, load_index, prepare, save_prediction
from assft_jax.data.phantom import generate
from assft_jax.deploy import predict
from assft_jax.engine.predict import from_logits
from assft_jax.models import SegResNetDS
from tests._engine_helpers import fast_variables
from tests._run_helpers import ROOT

SHAPE = (20, 18, 16)
# LPS voxel axes, anisotropic, and an origin far from 0, as a scan cropped on disk has.
LPS = np.array([[-0.8, 0, 0, 31.2], [0, -0.9, 0, -12.5], [0, 0, 1.5, 55.0], [0, 0, 0, 1]])
# PLS voxel axes: to SPL a 3-cycle of the axes. LPS -> SPL only swaps two axes, which is
# its own inverse, so on its own it cannot tell the inverse mapping from the forward one.
PLS = np.array([[0, -0.9, 0, 31.2], [-0.8, 0, 0, -12.5], [0, 0, 1.5, 55.0], [0, 0, 0, 1]])
HU = {"air": -1100, "body": 0, 1: 150, 2: 600}
NAMES = ("background", "liver", "spleen")
LOGIT = 4.0


def lps_case(folder, cid="scan", affine=LPS):
  """An int16 LPS scan (air around a body box holding two organs) and its label."""
  lab = np.zeros(SHAPE, np.uint8)
  lab[5:12, 6:13, 4:9] = 1
  lab[12:17, 4:10, 9:13] = 2
  img = np.full(SHAPE, HU["air"], np.int16)
  img[2:18, 3:16, 2:14] = HU["body"]
  img[lab == 1], img[lab == 2] = HU[1], HU[2]
  folder.mkdir(parents=True, exist_ok=True)
  nib.save(nib.Nifti1Image(img, affine), str(folder / f"{cid}.nii.gz"))
  return folder / f"{cid}.nii.gz", lab


class ThresholdModel:
  """A "model" whose prediction is known: on the ctfm pipeline's 0..1 scale (HU + 1024) /
  3072, body 0.333, organ 1 0.382, organ 2 0.529; logits LOGIT on the class of the voxel's
  intensity band, 0 elsewhere."""

  pcfg = PreprocessConfig("ctfm", orientation="SPL")
  class_names = NAMES

  def __init__(self, pcfg=None):
    if pcfg is not None:
      self.pcfg = pcfg

  def __call__(self, image, probabilities=False):
    cls = np.digitize(image[..., 0], [0.36, 0.45])
    return from_logits(LOGIT * np.eye(len(NAMES))[cls], probabilities)


@pytest.mark.parametrize("affine", [LPS, PLS], ids=["LPS", "PLS"])
def test_int16_scan_comes_back_on_its_own_voxels(tmp_path, affine):
  path, lab = lps_case(tmp_path / "in", affine=affine)
  assert nib.aff2axcodes(affine) == (("L", "P", "S") if affine is LPS else ("P", "L", "S"))
  rep = predict.predict_files(
    ThresholdModel(),
    predict.input_files(path),
    tmp_path / "out",
    uncertainty=True,
    probabilities=True,
  )
  assert not rep.failed and len(rep.written["scan"]) == 3
  src = nib.load(str(path))
  outs = {
    k: nib.load(str(tmp_path / "out" / f"scan{s}"))
    for k, s in (
      ("label", ".nii.gz"),
      ("unc", "_uncertainty.nii.gz"),
      ("prob", "_probabilities.nii.gz"),
    )
  }
  for img in outs.values():
    assert img.shape[:3] == src.shape
    np.testing.assert_allclose(img.affine, src.affine, atol=1e-6)
  assert outs["prob"].shape == SHAPE + (3,)
  # Reorientation (to SPL), the body crop and their inverses: the same voxels exactly.
  label = np.asarray(outs["label"].dataobj)
  assert label.dtype == np.uint8
  np.testing.assert_array_equal(label, lab)
  # Entropy of softmax(LOGIT, 0, 0) by hand inside the crop (the body box); 0 outside.
  p_hi = np.exp(LOGIT) / (np.exp(LOGIT) + 2)
  p_lo = 1 / (np.exp(LOGIT) + 2)
  h = -(p_hi * np.log(p_hi) + 2 * p_lo * np.log(p_lo))
  want = np.zeros(SHAPE)
  want[2:18, 3:16, 2:14] = h
  unc = np.asarray(outs["unc"].dataobj)
  assert unc.dtype == np.float32
  np.testing.assert_allclose(unc, want, atol=1e-6)
  prob = np.asarray(outs["prob"].dataobj)
  assert prob.dtype == np.float32
  np.testing.assert_allclose(prob.sum(-1), 1.0, atol=1e-6)
  np.testing.assert_array_equal(prob.argmax(-1), lab)
  np.testing.assert_allclose(prob[0, 0, 0], [1.0, 0.0, 0.0])  # outside the crop
  assert (tmp_path / "out" / "labels.ctbl").read_text() == viewer.color_table(NAMES)


def test_resampled_prediction_keeps_the_source_grid(tmp_path):
  """With --spacing the map goes there and back (nearest): shape and affine exact, the
  organs where they were up to boundary voxels."""
  path, lab = lps_case(tmp_path / "in")
  model = ThresholdModel(PreprocessConfig("ctfm", spacing=(1.3, 1.1, 1.0), orientation="RAS"))
  predict.predict_files(model, predict.input_files(path), tmp_path / "out", uncertainty=True)
  src = nib.load(str(path))
  for name in ("scan.nii.gz", "scan_uncertainty.nii.gz"):
    out = nib.load(str(tmp_path / "out" / name))
    assert out.shape == src.shape
    np.testing.assert_allclose(out.affine, src.affine, atol=1e-6)
  pred = np.asarray(nib.load(str(tmp_path / "out" / "scan.nii.gz")).dataobj)
  for k in (1, 2):
    dice = 2 * ((pred == k) & (lab == k)).sum() / ((pred == k).sum() + (lab == k).sum())
    assert dice > 0.8, (k, dice)


def test_a_bad_file_is_one_line_and_the_others_run(tmp_path):
  folder = tmp_path / "in"
  lps_case(folder, "a")
  lps_case(folder, "z")
  nib.save(
    nib.Nifti1Image(np.zeros((8, 8, 8, 2), np.float32), np.eye(4)), str(folder / "four_d.nii.gz")
  )
  nan = np.zeros((8, 8, 8), np.float32)
  nan[1, 2, 3] = np.nan
  nib.save(nib.Nifti1Image(nan, np.eye(4)), str(folder / "nan.nii.gz"))
  (folder / "corrupt.nii.gz").write_bytes(b"not a nifti file at all")
  log = io.StringIO()
  rep = predict.predict_files(
    ThresholdModel(), predict.input_files(folder), tmp_path / "out", log=log
  )
  assert sorted(rep.written) == ["a", "z"] and sorted(rep.failed) == ["corrupt", "four_d", "nan"]
  lines = log.getvalue().splitlines()
  assert len(lines) == 3
  for cid, line in zip(["corrupt", "four_d", "nan"], lines):
    assert line.startswith(f"error: {folder / cid}.nii.gz: "), line
  assert "4D image" in lines[1] and "NaN" in lines[2]
  got = sorted(p.name for p in (tmp_path / "out").iterdir())
  assert got == ["a.nii.gz", "labels.ctbl", "z.nii.gz"]


def test_existing_outputs_are_refused_without_overwrite(tmp_path):
  path, _ = lps_case(tmp_path / "in")
  out = tmp_path / "out"
  cases = predict.input_files(path)
  predict.predict_files(ThresholdModel(), cases, out)
  target = out / "scan.nii.gz"
  target.write_bytes(b"the user's file")
  with pytest.raises(predict.PredictError) as e:
    predict.predict_files(ThresholdModel(), cases, out, uncertainty=True)
  assert "--overwrite" in str(e.value) and str(target) in str(e.value)
  assert target.read_bytes() == b"the user's file"
  assert not (out / "scan_uncertainty.nii.gz").exists()  # refused before any prediction
  predict.predict_files(ThresholdModel(), cases, out, uncertainty=True, overwrite=True)
  assert nib.load(str(target)).shape == SHAPE
  # A color table of other classes is the user's too.
  (out / "labels.ctbl").write_text("0 background 0 0 0 0\n")
  with pytest.raises(predict.PredictError, match="labels.ctbl"):
    predict.predict_files(ThresholdModel(), cases, tmp_path / "out")
  # An input is never an output, even with --overwrite.
  with pytest.raises(predict.PredictError, match="over input"):
    predict.predict_files(ThresholdModel(), cases, path.parent, overwrite=True)


def test_bad_input_paths_name_the_flag(tmp_path):
  (tmp_path / "empty").mkdir()
  (tmp_path / "notes.txt").write_text("x")
  for bad in (tmp_path / "empty", tmp_path / "notes.txt", tmp_path / "missing.nii.gz"):
    with pytest.raises(predict.PredictError, match=f"--input={bad}"):
      predict.input_files(bad)
  lps_case(tmp_path / "dup", "a")
  nib.save(
    nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), str(tmp_path / "dup" / "a.nii")
  )
  with pytest.raises(predict.PredictError, match="same case id 'a'"):
    predict.input_files(tmp_path / "dup")


# ------------------------------------------------------------ a run's own model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A workdir as a run leaves it (config.json, round_000/model, DONE, summary.json), with
  a cheap network, and two phantom CT scans."""
  tmp = tmp_path_factory.mktemp("run")
  root = generate(tmp / "ph", "ct", 2, (20, 24, 18), seed=0)
  ds = load_index(root)
  cfg = config_lib.RunConfig(workdir=str(tmp / "wd"))
  cfg = dataclasses.replace(
    cfg,
    data=dataclasses.replace(cfg.data, crop_size=(16, 16, 16), orientation="RAS"),
    train=dataclasses.replace(cfg.train, patch=(16, 16, 16), sw_batch_size=1),
  )
  wd = wd_lib.open_workdir(cfg)
  module = SegResNetDS(init_filters=4, out_channels=len(ds.class_names), blocks_down=(1, 1, 1))
  variables = fast_variables(module, 16)
  wd_lib.save_model(wd, 0, module, variables)
  wd_lib.mark_done(wd, 0)
  atomic.write_json(wd / "summary.json", {"class_names": list(ds.class_names[1:]), "rounds": []})
  return cfg, wd, ds, module, variables


def test_model_paths_resolve_to_the_last_done_round(run_dir, tmp_path):
  _, wd, *_ = run_dir
  model = wd / "round_000" / "model"
  for arg in (wd, wd / "round_000", model):
    assert predict.resolve_model(arg) == (wd, model)
  with pytest.raises(predict.PredictError, match=f"--model={tmp_path}: not a run's workdir"):
    predict.resolve_model(tmp_path)
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(predict.PredictError, match="no completed round"):
    predict.resolve_model(tmp_path)


def test_predictions_equal_the_evaluation_path(run_dir, tmp_path):
  """The command's labels equal the run's own path for the same scan: `prepare` (the
  cached preprocessing), `engine.predict_labels`, `save_prediction`."""
  cfg, wd, ds, module, variables = run_dir
  pred = predict.load_predictor(wd)
  assert pred.class_names == ds.class_names
  assert pred.pcfg == PreprocessConfig(crop_size=(16, 16, 16), orientation="RAS")
  rep = predict.predict_files(pred, predict.input_files(ds.root / "imagesTr"), tmp_path / "out")
  ids = list(ds.ids)
  assert sorted(rep.written) == sorted(ids)
  vols = prepare(ds, pred.pcfg, tmp_path / "cache")
  ref = engine.predict_labels(module, variables, vols, ids, roi=(16, 16, 16), sw_batch_size=1)
  for cid in ids:
    want = nib.load(
      str(save_prediction(ref[cid], vols[cid].meta, tmp_path / "ref" / f"{cid}.nii.gz"))
    )
    got = nib.load(str(tmp_path / "out" / f"{cid}.nii.gz"))
    src = nib.load(str(ds.case(cid).image))
    assert got.shape == src.shape
    np.testing.assert_allclose(got.affine, src.affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(got.dataobj), np.asarray(want.dataobj))


def test_cli_names_the_bad_scan_and_writes_the_others(run_dir, tmp_path):
  _, wd, ds, *_ = run_dir
  folder = tmp_path / "in"
  folder.mkdir()
  good = ds.cases[0].image
  (folder / good.name).write_bytes(good.read_bytes())
  (folder / "broken.nii.gz").write_bytes(b"\x00" * 40)
  cmd = [sys.executable, "-m", "experiments.predict", f"--model={wd}", f"--input={folder}"]
  proc = subprocess.run(
    [*cmd, f"--output={tmp_path / 'out'}", "--uncertainty"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  errors = [x for x in proc.stderr.splitlines() if x.startswith("error: ")]
  assert errors[0].startswith(f"error: {folder / 'broken.nii.gz'}: ")
  assert "1 of 2 scan(s) failed" in errors[1] and len(errors) == 2
  stem = good.name.replace(".nii.gz", "")
  names = sorted(p.name for p in (tmp_path / "out").iterdir())
  assert names == sorted([f"{stem}.nii.gz", f"{stem}_uncertainty.nii.gz", "labels.ctbl"])
  table = (tmp_path / "out" / "labels.ctbl").read_text().splitlines()
  assert [line.split()[1] for line in table[2:]] == list(ds.class_names)
