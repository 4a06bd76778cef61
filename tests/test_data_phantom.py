"""Phantom benchmark: classes, domain shift, scanners, determinism, CLI."""

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import stats

from assft_jax.data import DataError, load_index, phantom
from assft_jax.data.phantom import CLASSES, case_metadata, generate, main

SHAPE = (20, 24, 24)


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
  root = tmp_path_factory.mktemp("phantom")
  return {d: generate(root / d, d, n=10, shape=SHAPE, seed=0) for d in ("ct", "mr")}


def organ_means(path):
  ds = load_index(path)
  sums = np.zeros(len(CLASSES))
  counts = np.zeros(len(CLASSES))
  for c in ds.cases:
    img = nib.load(str(c.image)).get_fdata()
    lab = np.asarray(nib.load(str(c.label)).dataobj).astype(int)
    sums += np.bincount(lab.ravel(), img.ravel(), len(CLASSES))
    counts += np.bincount(lab.ravel(), minlength=len(CLASSES))
  return sums[1:] / counts[1:], counts


def test_every_class_present_and_indexed(domains):
  for d, path in domains.items():
    ds = load_index(path, validate="full")
    assert ds.class_names == CLASSES and len(ds.cases) == 10
    assert ds.modality == ("CT" if d == "ct" else "MR")
    _, counts = organ_means(path)
    assert (counts > 0).all(), counts
    assert counts[CLASSES.index("pancreas")] < counts[CLASSES.index("liver")] / 5  # small class


def test_domains_differ_in_intensity_statistics(domains):
  ct, _ = organ_means(domains["ct"])
  mr, _ = organ_means(domains["mr"])
  rho = stats.spearmanr(ct, mr).statistic
  assert rho < 0.5, (ct, mr)  # organ contrast ordering is not preserved across domains
  ct_img = nib.load(str(load_index(domains["ct"]).cases[0].image)).get_fdata()
  mr_img = nib.load(str(load_index(domains["mr"]).cases[0].image)).get_fdata()
  assert ct_img.min() < -900 and mr_img.min() >= 0  # HU-like air vs magnitude images


def test_scanner_shares_and_metadata(tmp_path):
  path = generate(tmp_path, "mr", n=20, shape=(12, 12, 12), seed=3)
  meta = json.loads((path / "dataset.json").read_text())
  scanners = [c["scanner"] for c in meta["cases"].values()]
  assert [scanners.count(s) for s in "ABC"] == [12, 6, 2]
  assert sum(c["hard"] for c in meta["cases"].values()) == 3
  assert set(meta["cases"]) == {f"mr_{i:03d}" for i in range(20)}
  assert all({"absent", "lesions", "missing"} <= set(c) for c in meta["cases"].values())
  assert case_metadata(path) == meta["cases"] and case_metadata(tmp_path / "nothing") == {}


def test_same_seed_same_bytes(tmp_path):
  a = generate(tmp_path / "a", "mr", n=2, shape=(12, 12, 12), seed=1)
  b = generate(tmp_path / "b", "mr", n=2, shape=(12, 12, 12), seed=1)
  c = generate(tmp_path / "c", "mr", n=2, shape=(12, 12, 12), seed=2)
  for rel in ("imagesTr/mr_000.nii.gz", "labelsTr/mr_001.nii.gz", "dataset.json"):
    assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
  assert (a / "imagesTr/mr_000.nii.gz").read_bytes() != (c / "imagesTr/mr_000.nii.gz").read_bytes()


def test_cli(tmp_path, capsys):
  assert (
    main(
      [
        "--out",
        str(tmp_path / "p"),
        "--domain",
        "ct",
        "--n",
        "1",
        "--shape",
        "10,12,12",
        "--seed",
        "0",
      ]
    )
    == 0
  )
  img = nib.load(str(tmp_path / "p" / "imagesTr" / "ct_000.nii.gz"))
  assert img.shape == (10, 12, 12)
  assert nib.aff2axcodes(img.affine) == ("S", "P", "L")
  assert main(["--out", str(tmp_path / "q"), "--domain", "ct", "--shape", "10,12"]) == 2
  assert "--shape" in capsys.readouterr().err


def test_up_to_date_phantom_is_not_rewritten(tmp_path):
  a = generate(tmp_path, "ct", n=2, shape=(10, 10, 10), seed=0)
  f = a / "imagesTr" / "ct_000.nii.gz"
  before, content = f.stat().st_mtime_ns, f.read_bytes()
  generate(tmp_path, "ct", n=2, shape=(10, 10, 10), seed=0)
  assert f.stat().st_mtime_ns == before
  f.write_bytes(b"")  # damage it: overwrite=True regenerates the same bytes
  generate(tmp_path, "ct", n=2, shape=(10, 10, 10), seed=0, overwrite=True)
  assert f.read_bytes() == content
  generate(tmp_path, "ct", n=2, shape=(10, 10, 10), seed=1)
  assert json.loads((a / "dataset.json").read_text())["generator"]["seed"] == 1


def test_anisotropic_spacing_and_data_pipeline(tmp_path):
  """phantom -> index -> prepare -> loader -> augment, at 16^3."""
  import jax

  from assft_jax.data import PreprocessConfig, make_loader, prepare
  from assft_jax.data.augment import AugmentConfig, augment_batch

  path = generate(tmp_path / "p", "mr", n=3, shape=(8, 16, 16), seed=0, anisotropic=True)
  img = nib.load(str(path / "imagesTr" / "mr_000.nii.gz"))
  np.testing.assert_allclose(img.header.get_zooms(), (4.0, 1.5, 1.5))
  ds = load_index(path)
  vols = prepare(ds, PreprocessConfig("paper", crop_size=(16, 16, 16)), tmp_path / "cache")
  assert vols["mr_000"].image.shape == (16, 16, 16, 1)  # D padded from 8
  batch = next(make_loader(vols, list(ds.ids), (16, 16, 16), 2, seed=0))
  image, label = augment_batch(jax.random.key(0), batch["image"], batch["label"], AugmentConfig())
  assert image.shape == (2, 16, 16, 16, 1) and label.shape == (2, 16, 16, 16)
  assert set(np.unique(np.asarray(label))) <= set(range(len(CLASSES)))


@pytest.mark.parametrize("domain", ["ct", "mr"])
def test_organs_keep_contrast_after_paper_clip(tmp_path, domain):
  """After the 5th-95th percentile clip + z-score, organs are not clipped flat."""
  from assft_jax.data import PreprocessConfig, prepare

  path = generate(tmp_path / "p", domain, n=6, shape=(24, 24, 24), seed=0)
  vols = prepare(load_index(path), PreprocessConfig(), tmp_path / "cache")
  k = len(CLASSES)
  clipped, counts, sums = np.zeros(k), np.zeros(k), np.zeros(k)
  for v in vols.values():
    img, lab = np.asarray(v.image)[..., 0], np.asarray(v.label).ravel()
    at_clip = ((img >= img.max() - 1e-6) | (img <= img.min() + 1e-6)).ravel()
    clipped += np.bincount(lab, at_clip, k)
    counts += np.bincount(lab, minlength=k)
    sums += np.bincount(lab, img.ravel(), k)
  assert (clipped[1:] / counts[1:] < 0.1).all(), clipped[1:] / counts[1:]
  means = sums[1:] / counts[1:]
  assert np.ptp(means) > 0.05 and len(np.unique(means.round(3))) >= 4, means


def test_benchmark_shares_and_hard_fraction():
  # The evidence benchmark's phantom: shares 0.5/0.3/0.2 of 100 cases -> 50/30/20 exactly,
  # and a hard fraction of 0.1 -> 10 hard cases; the default keeps 60/30/10 and 15.
  specs = phantom.assign_cases("mr", 100, 0, 0.1, (0.5, 0.3, 0.2))
  assert [sum(s.scanner == g for s in specs) for g in "ABC"] == [50, 30, 20]
  assert sum(s.hard for s in specs) == 10
  default = phantom.assign_cases("mr", 100, 0, 0.15)
  assert [sum(s.scanner == g for s in default) for g in "ABC"] == [60, 30, 10]
  with pytest.raises(DataError, match="shares"):
    phantom.assign_cases("mr", 100, 0, 0.1, (0.5, 0.5, 0.5))


def test_benchmark_phantom_flags_are_checked(tmp_path):
  from assft_jax import flags as run_flags
  from assft_jax.config import ConfigError

  with pytest.raises(ConfigError, match="--phantom_shares"):
    run_flags.parse([f"--workdir={tmp_path}", "--phantom_shares=0.5,0.3"])
  with pytest.raises(ConfigError, match="--phantom_hard_fraction"):
    run_flags.parse([f"--workdir={tmp_path}", "--phantom_hard_fraction=1.5"])
