"""Validation: each bad input gives its own line naming the file; no traceback."""

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from assft_jax.data import DataError, load_index
from assft_jax.data.check import main
from tests._data_helpers import write_nii


def make_good(root, ids=("c0", "c1"), shape=(6, 6, 6)):
  rng = np.random.default_rng(0)
  training = []
  for cid in ids:
    write_nii(root / "imagesTr" / f"{cid}.nii.gz", rng.normal(size=shape).astype(np.float32))
    write_nii(root / "labelsTr" / f"{cid}.nii.gz", rng.integers(0, 3, shape).astype(np.uint8))
    training.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
  (root / "dataset.json").write_text(
    json.dumps(
      {
        "labels": {"0": "background", "1": "a", "2": "b"},
        "modality": {"0": "CT"},
        "training": training,
      }
    )
  )
  return root


def run_check(root, capsys, *extra):
  code = main([str(root), *extra])
  out = capsys.readouterr()
  return code, out.out, out.err


def test_good_dataset_prints_fingerprint(tmp_path, capsys):
  code, out, err = run_check(make_good(tmp_path), capsys)
  assert code == 0, err
  assert "2 cases" in out and "intensity percentiles" in out and "p50=" in out
  assert "class voxel fraction" in out and "spacing" in out


def corrupt(root):
  (root / "imagesTr" / "c0.nii.gz").write_bytes(b"not a nifti at all")


def four_d(root):
  write_nii(root / "imagesTr" / "c0.nii.gz", np.zeros((6, 6, 6, 2), np.float32))


def shape_mismatch(root):
  write_nii(root / "labelsTr" / "c0.nii.gz", np.zeros((6, 6, 5), np.uint8))


def affine_mismatch(root):
  aff = np.eye(4)
  aff[0, 3] = 2.0
  write_nii(root / "labelsTr" / "c0.nii.gz", np.zeros((6, 6, 6), np.uint8), aff)


def non_integer(root):
  write_nii(root / "labelsTr" / "c0.nii.gz", np.full((6, 6, 6), 0.5, np.float32))


def outside(root):
  write_nii(root / "labelsTr" / "c0.nii.gz", np.full((6, 6, 6), 7, np.uint8))


def nan_image(root):
  img = np.zeros((6, 6, 6), np.float32)
  img[1, 2, 3] = np.nan
  img[0, 0, 0] = np.inf
  write_nii(root / "imagesTr" / "c0.nii.gz", img)


def missing_label(root):
  (root / "labelsTr" / "c0.nii.gz").unlink()


def duplicate(root):
  meta = json.loads((root / "dataset.json").read_text())
  meta["training"].append(dict(meta["training"][0]))
  (root / "dataset.json").write_text(json.dumps(meta))


CASES = [
  (corrupt, "imagesTr/c0.nii.gz", "unreadable"),
  (four_d, "imagesTr/c0.nii.gz", "4D image .* take one channel"),
  (shape_mismatch, "labelsTr/c0.nii.gz", "label shape"),
  (affine_mismatch, "labelsTr/c0.nii.gz", "affine differs"),
  (non_integer, "labelsTr/c0.nii.gz", "non-integer label"),
  (outside, "labelsTr/c0.nii.gz", r"label values \[7\] outside the declared classes"),
  (nan_image, "imagesTr/c0.nii.gz", "1 NaN and 1 inf"),
  (missing_label, "labelsTr/c0.nii.gz", "missing label"),
  (duplicate, "imagesTr/c0.nii.gz", "duplicate case id 'c0'"),
]


@pytest.mark.parametrize("breaker,fname,pattern", CASES, ids=[c[0].__name__ for c in CASES])
def test_each_bad_input_reported(tmp_path, capsys, breaker, fname, pattern):
  import re

  root = make_good(tmp_path)
  breaker(root)
  code, out, err = run_check(root, capsys)
  assert code == 1
  assert "Traceback" not in err + out
  lines = [ln for ln in err.splitlines() if fname in ln]
  assert any(re.search(pattern, ln) for ln in lines), err


def test_all_problems_reported_together(tmp_path, capsys):
  root = make_good(tmp_path, ids=("c0", "c1", "c2"))
  corrupt(root)
  outside(root)  # c0's label; c0's image is corrupt, so only the image line for c0
  write_nii(root / "labelsTr" / "c1.nii.gz", np.full((6, 6, 6), 9, np.uint8))
  (root / "labelsTr" / "c2.nii.gz").unlink()
  code, _, err = run_check(root, capsys)
  assert code == 1
  assert "imagesTr/c0.nii.gz: unreadable" in err
  assert "labelsTr/c1.nii.gz: label values [9]" in err
  assert "imagesTr/c2.nii.gz: missing label (" in err and "labelsTr/c2.nii.gz not found" in err
  assert "3 problem(s)" in err


def test_load_index_header_vs_full(tmp_path):
  root = make_good(tmp_path)
  outside(root)
  load_index(root)  # header checks only: voxel values are not read
  with pytest.raises(DataError, match="outside the declared classes") as e:
    load_index(root, validate="full")
  assert len(e.value.problems) == 1
  shape_mismatch(root)
  with pytest.raises(DataError, match="label shape"):
    load_index(root)


def test_full_validation_does_not_load_the_cli(tmp_path):
  """The index layer checks voxels without importing the check CLI (no import circle)."""
  root = make_good(tmp_path)
  outside(root)
  code = (
    "import sys\n"
    "from assft_jax.data import DataError, load_index\n"
    "try:\n"
    f"  load_index({str(root)!r}, validate='full')\n"
    "except DataError as e:\n"
    "  print(len(e.problems))\n"
    "print('assft_jax.data.check' in sys.modules)\n"
  )
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.split() == ["1", "False"]


def test_cli_subprocess_no_traceback(tmp_path):
  root = make_good(tmp_path)
  nan_image(root)
  proc = subprocess.run(
    [sys.executable, "-m", "assft_jax.data.check", str(root)], capture_output=True, text=True
  )
  assert proc.returncode == 1
  assert "NaN" in proc.stderr and "Traceback" not in proc.stderr


def test_fingerprint_matches_direct_count(tmp_path):
  from assft_jax.data.check import fingerprint

  root = make_good(tmp_path, ids=("c0", "c1", "c2"))
  labels = [np.asarray(nib.load(str(root / "labelsTr" / f"c{i}.nii.gz")).dataobj) for i in range(3)]
  counts = np.bincount(np.concatenate([lab.ravel() for lab in labels]), minlength=3)
  fp = fingerprint(load_index(root))
  assert fp["n_cases"] == 3 and fp["shape"]["median"] == [6.0, 6.0, 6.0]
  got = [fp["class_voxel_fraction"][n] for n in ("background", "a", "b")]
  np.testing.assert_allclose(got, counts / counts.sum(), atol=1e-6)


def _three_scale_msd(root) -> dict[str, float]:
  """An MSD tree of 9 cases in three intensity scales, as MSD's Hippocampus stores them:
  uint8 near 100, float near 1,000 and float near 400,000. Returns each case's p99.5."""
  rng = np.random.default_rng(0)
  levels = {"a": (np.uint8, 100.0), "b": (np.float32, 1000.0), "c": (np.float32, 4e5)}
  training, scales = [], {}
  for name, (dtype, level) in levels.items():
    for k in range(3):
      cid = f"{name}{k}"
      img = (rng.random((8, 9, 10)) * level * (1 + 0.2 * k)).astype(dtype)
      lab = np.zeros((8, 9, 10), np.uint8)
      lab[2:5, 3:6, 4:7] = 1
      write_nii(root / "imagesTr" / f"{cid}.nii.gz", img)
      write_nii(root / "labelsTr" / f"{cid}.nii.gz", lab)
      training.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
      scales[cid] = float(np.percentile(img.astype(np.float64), 99.5))
  ds = {"name": "x", "labels": {"0": "background", "1": "fg"}, "modality": {"0": "MRI"}}
  (root / "dataset.json").write_text(json.dumps({**ds, "training": training}))
  return scales


def test_intensity_scales_are_grouped_reported_and_usable_as_strata(tmp_path, capsys):
  from assft_jax.data import case_groups, intensity, load_index

  scales = _three_scale_msd(tmp_path / "ds")
  assert main([str(tmp_path / "ds")]) == 0
  out = capsys.readouterr().out
  # The medians of the groups' scales: 100 x 1.2, 1000 x 1.2, 4e5 x 1.2, so 4,000x apart.
  med = {g: np.median([v for c, v in scales.items() if c[0] == g]) for g in "abc"}
  assert "3 groups of cases" in out and f"{med['c'] / med['a']:,.0f}x" in out
  assert "--stratify_by=intensity_group" in out
  groups = case_groups(load_index(tmp_path / "ds"), ["intensity_group"])
  assert {frozenset(c for c in groups if groups[c] == g) for g in set(groups.values())} == {
    frozenset({"a0", "a1", "a2"}),
    frozenset({"b0", "b1", "b2"}),
    frozenset({"c0", "c1", "c2"}),
  }
  lo = min(v for c, v in scales.items() if c[0] == "b")
  hi = max(v for c, v in scales.items() if c[0] == "b")
  assert groups["b0"] == f"p99.5 {lo:.3g}-{hi:.3g}"
  # One scale, one group: the check says nothing about scales.
  assert len(set(intensity.groups({"x": 10.0, "y": 20.0, "z": 29.0}).values())) == 1
  assert len(set(intensity.groups({"x": 10.0, "y": 40.0}).values())) == 2  # 0.6 decades
