"""Dataset index: every layout from tiny generated trees, class maps, remap/drop."""

import json

import numpy as np
import pytest

from assft_jax.data import DataError, load_index
from tests._data_helpers import write_nii


def pair(rng, shape=(6, 7, 8), n_classes=3):
  return rng.normal(size=shape).astype(np.float32), rng.integers(0, n_classes, shape).astype(
    np.uint8
  )


def make_msd(root, ids, labels, channel_suffix=False, modality=("0", "CT")):
  rng = np.random.default_rng(0)
  training = []
  for cid in ids:
    img, lab = pair(rng)
    name = f"{cid}_0000.nii.gz" if channel_suffix else f"{cid}.nii.gz"
    write_nii(root / "imagesTr" / name, img)
    write_nii(root / "labelsTr" / f"{cid}.nii.gz", lab)
    training.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
  meta = {"labels": labels, "modality": dict([modality]), "training": training}
  (root / "dataset.json").write_text(json.dumps(meta))
  return root


def test_msd_layout_amos_style(tmp_path):
  labels = {"0": "background", "1": "spleen", "2": "kidney_right"}
  ds = load_index(make_msd(tmp_path, ["amos_0001", "amos_0002"], labels))
  assert ds.layout == "msd"
  assert ds.class_names == ("background", "spleen", "kidney_right")
  assert ds.modality == "CT"
  assert ds.ids == ("amos_0001", "amos_0002")
  assert ds.cases[0].image.name == "amos_0001.nii.gz" and ds.cases[0].label.exists()


def test_nnunet_v1_listing_without_channel_suffix(tmp_path):
  # nnU-Net v1 dataset.json lists imagesTr/x.nii.gz while the file is x_0000.nii.gz
  ds = load_index(
    make_msd(tmp_path, ["la_003"], {"0": "background", "1": "atrium"}, channel_suffix=True)
  )
  assert ds.cases[0].image.name == "la_003_0000.nii.gz" and ds.ids == ("la_003",)


def test_nnunet_v2_layout(tmp_path):
  rng = np.random.default_rng(1)
  for cid in ("case_01", "case_02"):
    img, lab = pair(rng)
    write_nii(tmp_path / "imagesTr" / f"{cid}_0000.nii.gz", img)
    write_nii(tmp_path / "imagesTr" / f"{cid}_0001.nii.gz", img)  # a second channel
    write_nii(tmp_path / "labelsTr" / f"{cid}.nii.gz", lab)
  (tmp_path / "dataset.json").write_text(
    json.dumps(
      {
        "channel_names": {"0": "T2", "1": "ADC"},
        "labels": {"background": 0, "liver": 1, "spleen": 2},
        "numTraining": 2,
        "file_ending": ".nii.gz",
      }
    )
  )
  ds = load_index(tmp_path)
  assert ds.layout == "nnunet" and ds.modality == "T2"
  assert ds.class_names == ("background", "liver", "spleen")
  assert ds.ids == ("case_01", "case_02")
  assert all(c.image.name.endswith("_0000.nii.gz") for c in ds.cases)


def test_flare21_layout(tmp_path):
  rng = np.random.default_rng(2)
  for cid in ("train_000", "train_001"):
    img, lab = pair(rng, n_classes=5)
    write_nii(tmp_path / "TrainingImg" / f"{cid}_0000.nii.gz", img)
    write_nii(tmp_path / "TrainingMask" / f"{cid}.nii.gz", lab)
  ds = load_index(tmp_path)
  assert ds.layout == "flare21" and ds.modality == "CT"
  assert ds.class_names == ("background", "liver", "kidney", "spleen", "pancreas")
  assert ds.ids == ("train_000", "train_001")


def test_generic_layout_infers_classes(tmp_path):
  rng = np.random.default_rng(3)
  for cid in ("a", "b"):
    img, lab = pair(rng, n_classes=4)
    lab[0, 0, 0] = 3
    write_nii(tmp_path / "images" / f"{cid}.nii.gz", img)
    write_nii(tmp_path / "labels" / f"{cid}.nii.gz", lab)
  ds = load_index(tmp_path)
  assert ds.layout == "generic" and len(ds.class_names) == 4 and ds.ids == ("a", "b")


def test_drop_and_remap_labels(tmp_path):
  labels = {"0": "background", "1": "spleen", "2": "bladder", "3": "liver", "4": "prostate/uterus"}
  ds = load_index(make_msd(tmp_path, ["x"], labels), drop_labels=("bladder", "prostate/uterus"))
  assert ds.class_names == ("background", "spleen", "liver")
  assert ds.label_lut == (0, 1, 0, 2, 0)
  merged = load_index(tmp_path, label_map={"spleen": "organ", 3: "organ"}, drop_labels=(2,))
  assert merged.class_names == ("background", "organ", "prostate/uterus")
  assert merged.label_lut == (0, 1, 0, 1, 2)
  with pytest.raises(DataError, match="unknown class 'kidney'"):
    load_index(tmp_path, drop_labels=("kidney",))


def test_missing_label_allowed_for_unlabeled_pool(tmp_path):
  write_nii(tmp_path / "images" / "u.nii.gz", np.zeros((4, 4, 4), np.float32))
  with pytest.raises(DataError, match="missing label"):
    load_index(tmp_path)
  ds = load_index(tmp_path, require_labels=False)
  assert ds.cases[0].label is None


def test_unknown_layout_names_what_was_looked_for(tmp_path):
  with pytest.raises(DataError, match="no known layout"):
    load_index(tmp_path)


AMOS_LABELS = [
  "background",
  "spleen",
  "right kidney",
  "left kidney",
  "gall bladder",
  "esophagus",
  "liver",
  "stomach",
  "arota",
  "postcava",
  "pancreas",
  "right adrenal gland",
  "left adrenal gland",
  "duodenum",
  "bladder",
  "prostate/uterus",
]


def test_amos_mri_recipe(tmp_path):
  """AMOS22 keeps CT (< 500) and MRI (>= 500) in one tree, with a validation list."""
  rng = np.random.default_rng(4)
  meta = {
    "labels": {str(i): n for i, n in enumerate(AMOS_LABELS)},
    "modality": {"0": "CT"},
    "training": [],
    "validation": [],
  }
  for split, folder, ids in (
    ("training", "Tr", ("amos_0001", "amos_0507")),
    ("validation", "Va", ("amos_0008", "amos_0540")),
  ):
    for cid in ids:
      img, lab = pair(rng, n_classes=16)
      write_nii(tmp_path / f"images{folder}" / f"{cid}.nii.gz", img)
      write_nii(tmp_path / f"labels{folder}" / f"{cid}.nii.gz", lab)
      meta[split].append(
        {"image": f"./images{folder}/{cid}.nii.gz", "label": f"./labels{folder}/{cid}.nii.gz"}
      )
  (tmp_path / "dataset.json").write_text(json.dumps(meta))
  assert load_index(tmp_path).ids == ("amos_0001", "amos_0507")
  mri = load_index(
    tmp_path,
    include=r"amos_0[5-9]\d\d",
    splits=("training", "validation"),
    drop_labels=("bladder", "prostate/uterus"),
  )
  assert mri.ids == ("amos_0507", "amos_0540")
  assert len(mri.class_names) == 14 and "bladder" not in mri.class_names
  assert mri.label_lut[14] == 0 and mri.label_lut[15] == 0 and mri.label_lut[13] == 13
  with pytest.raises(DataError, match="no case id matches"):
    load_index(tmp_path, include="nothing")
  (tmp_path / "labelsTr" / "amos_0001.nii.gz").unlink()  # a CT case: irrelevant to MRI
  assert load_index(tmp_path, include=r"amos_0[5-9]\d\d").ids == ("amos_0507",)
  with pytest.raises(DataError, match="amos_0001.nii.gz: missing label"):
    load_index(tmp_path)


def test_abdomen_atlas_layout_per_class_masks(tmp_path):
  from assft_jax.data import PreprocessConfig, prepare

  rng = np.random.default_rng(5)
  names = ("aorta", "kidney_left", "liver")
  truth = {}
  for cid in ("BDMAP_00000001", "BDMAP_00000002"):
    img, lab = pair(rng, n_classes=4)
    write_nii(tmp_path / cid / "ct.nii.gz", img)
    for k, name in enumerate(names, start=1):
      write_nii(tmp_path / cid / "segmentations" / f"{name}.nii.gz", (lab == k).astype(np.uint8))
    truth[cid] = lab
  ds = load_index(tmp_path, validate="full")
  assert ds.layout == "atlas" and ds.modality == "CT"
  assert ds.class_names == ("background",) + names
  vols = prepare(ds, PreprocessConfig(crop_size=(6, 7, 8)), tmp_path / "cache")
  for cid, lab in truth.items():
    np.testing.assert_array_equal(np.asarray(vols[cid].label), lab)
  (tmp_path / "BDMAP_00000002" / "segmentations" / "liver.nii.gz").unlink()
  with pytest.raises(DataError, match="BDMAP_00000002/segmentations/liver.nii.gz: missing mask"):
    load_index(tmp_path)
