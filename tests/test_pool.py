"""The pool's transitions (§3.4 included) and the test split, as values."""

from __future__ import annotations

import numpy as np
import pytest

from assft_jax.pool import Pool, draw_split

IDS = [f"c{i}" for i in range(10)]


def test_a_round_of_transitions():
  pool = Pool.initial({"pool": IDS[:8], "test": IDS[8:]})
  assert pool.queryable == tuple(IDS[:8]) and pool.test == tuple(IDS[8:])
  pool = pool.with_queried(["c3"], 0)
  assert pool.labeled == {"c3": 0} and "c3" not in pool.unlabeled
  # SSFT in round 1 pseudo-labels c1 and c5: they may not be queried in round 2 ...
  pool = pool.with_queried(["c0", "c7"], 1).with_pseudo(["c1", "c5", "c1"])
  assert pool.pseudo == ("c1", "c5") and pool.excluded == ("c1", "c5")
  assert pool.queryable == ("c2", "c4", "c6")
  assert pool.labeled == {"c3": 0, "c0": 1, "c7": 1}
  # ... and the next round's pseudo set replaces the exclusion, not adds to it.
  pool = pool.with_queried(["c2"], 2).with_pseudo(["c4"])
  assert pool.excluded == ("c4",) and pool.queryable == ("c1", "c5", "c6")
  # A round without SSFT leaves no exclusion.
  assert pool.with_pseudo([]).queryable == ("c1", "c4", "c5", "c6")


def test_transitions_refuse_cases_outside_the_unlabeled_pool():
  pool = Pool.initial({"pool": IDS[:8], "test": IDS[8:]}).with_queried(["c0"], 0)
  for bad in (["c0"], ["c9"], ["zz"]):
    with pytest.raises(ValueError, match="not in the unlabeled pool"):
      pool.with_queried(bad, 1)
    with pytest.raises(ValueError, match="not in the unlabeled pool"):
      pool.with_pseudo(bad)


def test_json_round_trip():
  pool = Pool.initial({"pool": IDS[:8], "test": IDS[8:]}).with_queried(["c2"], 0)
  pool = pool.with_queried(["c4"], 1).with_pseudo(["c6"])
  assert Pool.from_json(pool.to_json()) == pool


def test_split_draws_test_cases_from_labeled_ones_by_seed():
  labeled = IDS[2:]  # c0, c1 have no label: they can only be in the pool
  a = draw_split(IDS, labeled, 0.25, seed=3)
  # numpy rewrite of the rule: round(fraction x all cases) labeled cases, by the seed.
  n = round(0.25 * len(IDS))
  want = sorted(np.random.default_rng([3, 7]).permutation(sorted(labeled))[:n].tolist())
  assert a["test"] == want
  assert a["pool"] == [c for c in IDS if c not in want]
  assert draw_split(IDS, labeled, 0.25, seed=3) == a
  assert draw_split(IDS, labeled, 0.25, seed=4)["test"] != a["test"]
  assert draw_split(IDS, [], 0.25, seed=3) == {"test": [], "pool": IDS}


def test_stratified_split_keeps_each_groups_share_of_the_test_set():
  # 60 labeled cases: 36 of scanner A, 18 of B, 6 of C; a 20 % test split = 12 cases,
  # so each scanner's share gives 7.2 / 3.6 / 1.2 -> within one case of it.
  ids = [f"c{i:02d}" for i in range(60)]
  groups = {c: "A" if i < 36 else "B" if i < 54 else "C" for i, c in enumerate(ids)}
  a = draw_split(ids, ids, 0.2, seed=5, groups=groups)
  assert len(a["test"]) == 12 and set(a["test"]).isdisjoint(a["pool"])
  assert sorted(a["test"] + a["pool"]) == ids
  for g, share in (("A", 7.2), ("B", 3.6), ("C", 1.2)):
    assert abs(sum(groups[c] == g for c in a["test"]) - share) < 1
  assert draw_split(ids, ids, 0.2, seed=5, groups=groups) == a
  assert draw_split(ids, ids, 0.2, seed=6, groups=groups)["test"] != a["test"]
  # A plain draw of the same size misses scanner C for some seed; the stratified never does.
  plain = [draw_split(ids, ids, 0.2, seed=k)["test"] for k in range(40)]
  assert any(not any(groups[c] == "C" for c in t) for t in plain)
  assert all(
    any(groups[c] == "C" for c in draw_split(ids, ids, 0.2, k, groups)["test"]) for k in range(40)
  )


def test_case_groups_reads_the_cases_table_and_names_what_is_missing(tmp_path):
  import json

  import pytest

  from assft_jax.data import DataError, case_groups
  from assft_jax.data.datasets import Case, Dataset

  ds = Dataset(
    cases=(Case("a", tmp_path / "a.nii.gz", None), Case("b", tmp_path / "b.nii.gz", None)),
    class_names=("background", "x"),
    modality="MR",
    root=tmp_path,
    layout="msd",
  )
  cases = {"a": {"scanner": "A", "hard": False}, "b": {"scanner": "B", "hard": True}}
  (tmp_path / "dataset.json").write_text(json.dumps({"cases": cases}))
  assert case_groups(ds, ["scanner", "hard"]) == {"a": "A/False", "b": "B/True"}
  cases["a"]["site"] = "x"  # b has no site
  (tmp_path / "dataset.json").write_text(json.dumps({"cases": cases}))
  with pytest.raises(DataError, match=r"dataset.json.*'b'.*site"):
    case_groups(ds, ["site"])
