"""Preprocessing: geometry round trip to the source file, normalisation, cache, and
annotators' label files onto a case's grid."""

import json
import re
import shutil

import nibabel as nib
import numpy as np
import pytest

from assft_jax.data import (
  DataError,
  PreprocessConfig,
  load_index,
  prepare,
  prepare_label,
  save_prediction,
)
from assft_jax.data.preprocess import normalise


def oblique_affine(spacing=(1.2, 0.8, 2.5)):
  """A non-trivial, non-canonical affine (axes permuted/flipped, shifted)."""
  a = np.zeros((4, 4))
  a[1, 0], a[0, 1], a[2, 2] = -spacing[0], spacing[1], -spacing[2]
  a[:3, 3] = (10.0, -20.0, 33.0)
  a[3, 3] = 1
  return a


def make_dataset(root, shape=(20, 18, 16), n=2, affine=None):
  rng = np.random.default_rng(0)
  affine = oblique_affine() if affine is None else affine
  training = []
  for i in range(n):
    img = rng.normal(-900, 10, shape)  # air
    lab = np.zeros(shape, np.uint8)
    lab[4:14, 5:12, 3:12] = 1
    lab[8:11, 7:10, 5:8] = 2
    img[lab > 0] = 40 + 60 * lab[lab > 0] + rng.normal(0, 5, int((lab > 0).sum()))
    for sub, arr in (("imagesTr", img.astype(np.int16)), ("labelsTr", lab)):
      (root / sub).mkdir(parents=True, exist_ok=True)
      nib.save(nib.Nifti1Image(arr, affine), str(root / sub / f"c{i}.nii.gz"))
    training.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"})
  (root / "dataset.json").write_text(
    json.dumps(
      {
        "labels": {"0": "background", "1": "a", "2": "b"},
        "modality": {"0": "CT"},
        "training": training,
      }
    )
  )
  return load_index(root)


@pytest.mark.parametrize(
  "cfg",
  [
    PreprocessConfig("paper", crop_size=(16, 24, 12)),
    PreprocessConfig("paper", crop_size=(16, 16, 16), orientation="RAS"),
    PreprocessConfig("ctfm", orientation="SPL", spacing=(1.0, 1.0, 1.0)),
  ],
  ids=["crop", "ras", "spl_resample"],
)
def test_roundtrip_to_source_geometry(tmp_path, cfg):
  ds = make_dataset(tmp_path / "data")
  vols = prepare(ds, cfg, tmp_path / "cache")
  vol = vols["c0"]
  assert vol.image.dtype == np.float32 and vol.image.ndim == 4 and vol.image.shape[-1] == 1
  assert vol.label.dtype == np.int32 and vol.label.shape == vol.image.shape[:3]
  if cfg.crop_size:
    assert vol.label.shape == cfg.crop_size
  out = save_prediction(np.asarray(vol.label), vol.meta, tmp_path / "pred" / "c0.nii.gz")
  src = nib.load(str(ds.case("c0").image))
  back = nib.load(str(out))
  assert back.shape == src.shape
  np.testing.assert_allclose(back.affine, src.affine, atol=1e-5)
  # the preprocessed ground truth, written back, overlays the source label
  gt = np.asarray(nib.load(str(ds.case("c0").label)).dataobj)
  pred = np.asarray(back.dataobj)
  if cfg.spacing is None:  # exact where the crop covers the source
    np.testing.assert_array_equal(pred, gt)
  else:  # nearest resampling there and back: boundary voxels may move
    for k in (1, 2):
      dice = 2 * ((pred == k) & (gt == k)).sum() / ((pred == k).sum() + (gt == k).sum())
      assert dice > 0.8, (k, dice)


@pytest.mark.parametrize(
  "cfg",
  [
    PreprocessConfig("paper", crop_size=(16, 16, 16), orientation="RAS"),
    PreprocessConfig("paper", crop_size=(20, 20, 20), orientation="RAS", spacing=(0.7, 1.3, 2.0)),
  ],
  ids=["ras", "ras_resample"],
)
def test_preprocessed_affine_maps_voxels_to_same_world_point(tmp_path, cfg):
  ds = make_dataset(tmp_path / "data")
  vol = prepare(ds, cfg, tmp_path / "cache")["c0"]
  src = nib.load(str(ds.case("c0").label))
  gt = np.asarray(src.dataobj)
  inv = np.linalg.inv(src.affine)
  idx = np.argwhere(np.asarray(vol.label) == 2)
  world = np.c_[idx, np.ones(len(idx))] @ np.asarray(vol.meta["affine"]).T
  vox = np.rint(world @ inv.T)[:, :3].astype(int)
  assert (gt[tuple(vox.T)] == 2).all()


def test_paper_and_ctfm_normalisation():
  rng = np.random.default_rng(0)
  img = rng.normal(0, 300, (20, 20, 20)).astype(np.float32)
  out, _ = normalise(img, "paper")
  p5, p95 = np.percentile(img, [5, 95])
  ref = np.clip(img, p5, p95)
  ref = (ref - ref.mean()) / ref.std()
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
  hu = np.array([-2000, -1024, 512, 2048, 3000], np.float32).reshape(1, 1, 5)
  out, _ = normalise(hu, "ctfm")
  np.testing.assert_allclose(out.ravel(), [0, 0, 0.5, 1, 1], atol=1e-6)


def test_cache_hit_and_invalidation(tmp_path, monkeypatch):
  import assft_jax.data.preprocess as pp

  ds = make_dataset(tmp_path / "data")
  cfg = PreprocessConfig("paper", crop_size=(16, 16, 16))
  first = prepare(ds, cfg, tmp_path / "cache")
  entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
  assert len(entries) == 2

  calls = []
  real = pp.preprocess_case
  monkeypatch.setattr(pp, "preprocess_case", lambda *a: calls.append(a[0].id) or real(*a))
  again = prepare(ds, cfg, tmp_path / "cache")
  assert calls == []  # every case read from the cache
  np.testing.assert_array_equal(np.asarray(again["c0"].image), np.asarray(first["c0"].image))
  assert isinstance(again["c0"].image, np.memmap)  # lazy

  prepare(ds, PreprocessConfig("paper", crop_size=(16, 16, 12)), tmp_path / "cache")
  assert calls == ["c0", "c1"]  # a changed setting rebuilds
  img = ds.case("c1").image
  arr = nib.load(str(img))
  nib.save(nib.Nifti1Image(np.asarray(arr.dataobj) + 1, arr.affine), str(img))
  calls.clear()
  prepare(ds, cfg, tmp_path / "cache")
  assert calls == ["c1"]  # a changed input file rebuilds that case only
  # no temp or moved-aside folder of the atomic writer is left behind
  assert not any(p.name.startswith(".") for p in (tmp_path / "cache").iterdir())


def test_prepare_names_bad_file(tmp_path):
  ds = make_dataset(tmp_path / "data")
  lab = ds.case("c1").label
  nib.save(nib.Nifti1Image(np.full((20, 18, 16), 5, np.uint8), oblique_affine()), str(lab))
  with pytest.raises(DataError, match=r"c1.nii.gz: label values \[5\] outside") as e:
    prepare(ds, PreprocessConfig(), tmp_path / "cache")
  assert len(e.value.problems) == 1


def save(path, arr, affine=None):
  nib.save(nib.Nifti1Image(arr, oblique_affine() if affine is None else affine), str(path))


def annotator_label(seed=1, shape=(20, 18, 16)):
  """A label unlike the ground truth: random blocks of classes 0..2, [D, H, W] uint8."""
  rng = np.random.default_rng(seed)
  lab = np.zeros(shape, np.uint8)
  for _ in range(6):
    lo = rng.integers(0, np.array(shape) - 4)
    hi = lo + rng.integers(3, 9, 3)
    lab[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = rng.integers(1, 3)
  return lab


LABEL_CFGS = [
  PreprocessConfig("paper"),
  PreprocessConfig("paper", crop_size=(16, 24, 12), orientation="RAS"),
  PreprocessConfig("ctfm", orientation="SPL", spacing=(1.0, 1.3, 0.7)),
]


@pytest.mark.parametrize("drop", [(), ("a",)], ids=["identity_lut", "drop_a"])
@pytest.mark.parametrize("cfg", LABEL_CFGS, ids=["bbox", "ras_crop", "spl_resample"])
def test_prepare_label_equals_prepare_of_the_same_file(tmp_path, cfg, drop):
  """The annotator's file through `prepare_label` == through `prepare` as the label of
  an ordinary dataset holding the same image: bit for bit, int32."""
  ann = tmp_path / "annotations" / "c0.nii.gz"
  ann.parent.mkdir()
  save(ann, annotator_label())
  ds = load_index(make_dataset(tmp_path / "data").root, drop_labels=drop)
  ref_root = make_dataset(tmp_path / "ref").root  # same seed: the same image bytes
  shutil.copy(ann, ref_root / "labelsTr" / "c0.nii.gz")
  ref = prepare(load_index(ref_root, drop_labels=drop), cfg, tmp_path / "cache")["c0"].label
  got = prepare_label(ds, "c0", ann, cfg)
  assert got.dtype == np.int32 and got.shape == ref.shape
  np.testing.assert_array_equal(got, np.asarray(ref))
  assert len(np.unique(got)) == (2 if drop else 3)  # the comparison is not of empty maps
  gt = prepare(ds, cfg, tmp_path / "cache")["c0"].label
  assert not np.array_equal(got, np.asarray(gt))  # the file was used, not the case's label


def truncated(path):
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])  # a half-written .nii.gz: header readable


def shifted_affine(path):
  aff = oblique_affine()
  aff[0, 3] += 2.0
  save(path, annotator_label(), aff)


LABEL_PROBLEMS = [
  (lambda p: p.unlink(), "file not found"),
  (lambda p: p.write_bytes(b"not a nifti"), "unreadable NIfTI"),
  (truncated, "corrupt voxel data"),
  (lambda p: save(p, np.zeros((20, 18, 15), np.uint8)), r"label shape \(20, 18, 15\) differs"),
  (shifted_affine, "label affine differs"),
  (lambda p: save(p, np.full((20, 18, 16), 3, np.uint8)), r"label values \[3\] outside"),
  (lambda p: save(p, np.full((20, 18, 16), 0.5, np.float32)), "non-integer label"),
  (lambda p: save(p, np.zeros((20, 18, 16, 2), np.uint8)), "4D image"),
]


@pytest.mark.parametrize(
  "breaker,pattern",
  LABEL_PROBLEMS,
  ids=["missing", "garbage", "half_gzip", "shape", "affine", "range", "fraction", "4d"],
)
def test_prepare_label_names_the_file_and_the_problem(tmp_path, breaker, pattern):
  ds = make_dataset(tmp_path / "data")
  ann = tmp_path / "annotations" / "c0.nii.gz"
  ann.parent.mkdir()
  save(ann, annotator_label())
  prepare_label(ds, "c0", ann, PreprocessConfig())  # the intact file is fine
  breaker(ann)
  with pytest.raises(DataError) as e:
    prepare_label(ds, "c0", ann, PreprocessConfig())
  assert len(e.value.problems) == 1
  assert e.value.problems[0].startswith(f"{ann}: ")
  assert re.search(pattern, e.value.problems[0]), e.value.problems


@pytest.mark.parametrize(
  "kwargs,flag",
  [
    (dict(pipeline="nnunet"), "pipeline"),
    (dict(crop_size=(16, 16)), "crop_size"),
    (dict(spacing=(1.0, 0.0, 1.0)), "spacing"),
  ],
)
def test_bad_config_names_the_field(kwargs, flag):
  with pytest.raises(DataError, match=flag):
    PreprocessConfig(**kwargs)


@pytest.mark.torch
def test_ctfm_pipeline_matches_monai(tmp_path):
  """CT-FM's model-card preprocessing in MONAI vs `prepare(pipeline="ctfm", SPL)`."""
  import monai.transforms as monai_t
  import torch  # noqa: F401  (a declared test dependency: missing it fails)

  rng = np.random.default_rng(0)
  shape = (20, 18, 16)
  img = np.full(shape, -1024, np.int16)  # air at exactly -1024 -> 0 after scaling
  img[3:15, 4:12, 2:14] = rng.integers(-900, 2500, (12, 8, 12))
  (tmp_path / "images").mkdir()
  (tmp_path / "labels").mkdir()
  nib.save(nib.Nifti1Image(img, oblique_affine()), str(tmp_path / "images" / "x.nii.gz"))
  nib.save(
    nib.Nifti1Image(np.zeros(shape, np.uint8), oblique_affine()),
    str(tmp_path / "labels" / "x.nii.gz"),
  )
  ref = monai_t.Compose(
    [
      monai_t.LoadImage(image_only=True, reader="NibabelReader"),
      monai_t.EnsureChannelFirst(),
      monai_t.Orientation(axcodes="SPL"),
      monai_t.ScaleIntensityRange(-1024, 2048, 0.0, 1.0, clip=True),
      monai_t.CropForeground(),
    ]
  )(str(tmp_path / "images" / "x.nii.gz"))
  vol = prepare(
    load_index(tmp_path), PreprocessConfig("ctfm", orientation="SPL"), tmp_path / "cache"
  )["x"]
  np.testing.assert_allclose(np.asarray(vol.image)[..., 0], ref.numpy()[0], atol=1e-6)
  np.testing.assert_allclose(np.asarray(vol.meta["affine"]), ref.affine.numpy(), atol=1e-5)
