"""Class selection (--keep_labels, --label_map, --drop_labels) on the phantom, through
`load_index`, preprocessing, the check CLI, the run's flags and the sweep's command."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from assft_jax.data import DataError, PreprocessConfig, load_index, phantom, prepare
from assft_jax.data.check import main as check_main
from assft_jax.data.classes import parse_label_map
from assft_jax.data.preprocess import load_checked

# phantom_synth.CLASSES by value: 0 background, 1 liver, 2 spleen, 3 kidney_left,
# 4 kidney_right, 5 stomach, 6 aorta, 7 pancreas.
DECLARED = "background, liver, spleen, kidney_left, kidney_right, stomach, aorta, pancreas"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return phantom.generate(tmp_path_factory.mktemp("ph") / "mr", "mr", n=2, shape=(16, 16, 16))


def raw_label(case) -> np.ndarray:
  return np.asarray(nib.load(str(case.label)).dataobj).astype(int)


def test_keep_labels_keeps_two_classes_and_zeroes_the_rest(root):
  ds = load_index(root, keep_labels=("spleen", "7"))  # a name and a value, as drop_labels
  assert ds.class_names == ("background", "spleen", "pancreas")
  for case in ds.cases:
    raw = raw_label(case)
    # The rewrite: spleen (2) -> 1, pancreas (7) -> 2, every other value -> 0.
    want = np.where(raw == 2, 1, np.where(raw == 7, 2, 0))
    assert (want == 1).any() and (want == 2).any() and ((raw > 0) & (want == 0)).any()
    _, label, _ = load_checked(case, None, ds)
    np.testing.assert_array_equal(label, want)


def test_the_class_set_keys_the_preprocessing_cache(root, tmp_path):
  """Both selections share one cache folder; each reads its own labels back."""
  full = prepare(load_index(root), PreprocessConfig(), tmp_path)
  kept = prepare(load_index(root, keep_labels=("liver", "aorta")), PreprocessConfig(), tmp_path)
  for cid in full:
    f = np.asarray(full[cid].label)
    np.testing.assert_array_equal(kept[cid].label, np.where(f == 1, 1, np.where(f == 6, 2, 0)))
  assert len(list(tmp_path.iterdir())) == 2 * len(full)


def test_label_map_merges_and_renames(root):
  ds = load_index(root, label_map=parse_label_map(["kidney_left:kidney", "4:kidney", "6:vessel"]))
  # kidney_left and kidney_right merge at kidney_left's place; aorta is renamed in place.
  assert ds.class_names == (
    "background",
    "liver",
    "spleen",
    "kidney",
    "stomach",
    "vessel",
    "pancreas",
  )
  assert ds.label_lut == (0, 1, 2, 3, 3, 4, 5, 6)
  both = load_index(root, label_map={"liver": "organ", "spleen": "organ"}, keep_labels=(1, 2))
  assert both.class_names == ("background", "organ") and both.label_lut == (0, 1, 1, 0, 0, 0, 0, 0)


@pytest.mark.parametrize(
  "kwargs, needle",
  [
    (
      dict(keep_labels=("liver", "heart")),
      f"--keep_labels: unknown class 'heart' (declared: {DECLARED})",
    ),
    (dict(keep_labels=("9",)), "--keep_labels: unknown class '9'"),
    (dict(label_map={"lung": "x"}), f"--label_map: unknown class 'lung' (declared: {DECLARED})"),
    (dict(keep_labels=("liver",), drop_labels=("spleen",)), "exclude each other"),
    (
      dict(keep_labels=("liver",), label_map={"spleen": "organ"}),
      "--label_map renames spleen, which --keep_labels drops",
    ),
  ],
)
def test_bad_selections_are_one_clear_error(root, kwargs, needle):
  with pytest.raises(DataError) as e:
    load_index(root, **kwargs)
  assert needle in str(e.value)


@pytest.mark.parametrize("item", ["liver", "liver:", ":organ", "a:b:c"])
def test_malformed_label_map_names_the_flag(item):
  with pytest.raises(DataError, match="--label_map: .* is not old:new"):
    parse_label_map([item])


def test_check_cli_takes_the_selection(root, capsys):
  assert check_main([str(root), "--keep_labels=liver,spleen", "--json"]) == 0
  fp = json.loads(capsys.readouterr().out)
  assert list(fp["class_voxel_fraction"]) == ["background", "liver", "spleen"]
  assert check_main([str(root), "--label_map=liver:organ,spleen:organ", "--json"]) == 0
  assert list(json.loads(capsys.readouterr().out)["class_case_count"])[:2] == [
    "background",
    "organ",
  ]
  assert check_main([str(root), "--keep_labels=heart"]) == 1
  assert "--keep_labels: unknown class 'heart'" in capsys.readouterr().err


def test_run_flags_reach_the_dataset(root, tmp_path):
  """The run's --keep_labels / --label_map select the classes the session loads."""
  from assft_jax import components
  from assft_jax import flags as run_flags

  argv = [f"--workdir={tmp_path}", f"--data_dir={root}"]
  kept = components.load_dataset(run_flags.parse([*argv, "--keep_labels=liver,spleen"]))
  assert kept.class_names == ("background", "liver", "spleen")
  merged = components.load_dataset(run_flags.parse([*argv, "--label_map=3:kidney,4:kidney"]))
  assert merged.class_names[3] == "kidney" and len(merged.class_names) == 7


def test_sweep_passes_the_selection_to_every_run(tmp_path):
  from assft_jax import sweep

  (cell,) = sweep.plan_cells(sweep.parse_strategies("rand"), [0], tmp_path)
  cmd = sweep.run_command(cell, [], ["--keep_labels=liver,spleen", "--label_map=liver:organ"])
  assert cmd[-2:] == ["--keep_labels=liver,spleen", "--label_map=liver:organ"]
  sweep.check_extra(["--keep_labels=liver,spleen", "--nsd_tolerance_mm=1"])  # not cell flags
