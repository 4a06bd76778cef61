"""The power measurement's pure parts: the two labeled sets and the figures."""

import math

import numpy as np
import pytest
from scipy import stats

from assft_jax import power
from assft_jax.config import ConfigError


def _pool():
  # 40 A, 20 B, 8 C cases, 4 of A and 2 of B hard: the benchmark's scanner shares.
  groups = {}
  for g, n in (("A", 36), ("A/h", 4), ("B", 18), ("B/h", 2), ("C", 8)):
    for i in range(n):
      groups[f"{g.replace('/', '')}{i:02d}"] = g
  return list(groups), groups


def test_well_set_covers_every_stratum_in_share_and_poor_set_only_the_largest():
  pool, groups = _pool()
  sets = power.choose_sets(pool, groups, 13)
  well, poor = sets["well"], sets["poor"]
  assert len(well) == len(set(well)) == 13 and len(poor) == len(set(poor)) == 13
  assert {groups[c] for c in poor} == {"A"}
  count = {g: sum(groups[c] == g for c in well) for g in set(groups.values())}
  # Shares of 68 pool cases x 13: A 6.88, A/h 0.76, B 3.44, B/h 0.38, C 1.53.
  # Floors with a minimum of one: 6, 1, 3, 1, 1 = 12; the largest remainder (A, .88)
  # gets the 13th.
  assert count == {"A": 7, "A/h": 1, "B": 3, "B/h": 1, "C": 1}


def test_set_size_out_of_range_is_a_clear_error():
  pool, groups = _pool()
  with pytest.raises(ConfigError, match="--set_size=3"):
    power.choose_sets(pool, groups, 3)  # five strata cannot fit in three cases
  with pytest.raises(ConfigError, match="--set_size=40"):
    power.choose_sets(pool, groups, 40)  # the largest stratum holds 36


def test_summary_figures_match_numpy_and_scipy():
  groups = {"t0": "A", "t1": "A", "t2": "B"}
  rng = np.random.default_rng(0)
  cells = []
  for name, base in (("well", 0.6), ("poor", 0.5)):
    for s in range(5):
      per = {t: float(base + rng.normal(0, 0.05)) for t in groups}
      cells.append(
        {"set": name, "seed": s, "dice_mean": float(np.mean(list(per.values()))), "per_case": per}
      )
  res = power.summarize(cells, groups, list(groups))
  w = np.array([c["dice_mean"] for c in cells if c["set"] == "well"])
  p = np.array([c["dice_mean"] for c in cells if c["set"] == "poor"])
  noise = math.sqrt((w.var(ddof=1) + p.var(ddof=1)) / 2)
  assert res["noise_sd"] == pytest.approx(noise, rel=1e-12)
  assert res["effect"] == pytest.approx(w.mean() - p.mean(), rel=1e-12)
  assert res["ratio"] == pytest.approx((w.mean() - p.mean()) / noise, rel=1e-12)
  assert res["welch_p"] == pytest.approx(stats.ttest_ind(w, p, equal_var=False).pvalue, rel=1e-12)
  b_well = np.mean([c["per_case"]["t2"] for c in cells if c["set"] == "well"])
  assert res["by_group"]["well"]["B"] == pytest.approx(b_well, rel=1e-12)
  assert res["test_groups"] == {"A": 2, "B": 1}


def test_run_extent_follows_the_run_settings():
  import dataclasses

  from assft_jax import config as config_lib

  cfg = config_lib.RunConfig(workdir="unused")
  cfg = dataclasses.replace(
    cfg,
    al=dataclasses.replace(cfg.al, rounds=3, budget="5%"),
    train=dataclasses.replace(
      cfg.train, epochs_init=120, epochs_round=60, steps_per_epoch=1, batch_size=2
    ),
  )
  # pool 75: N_B = ceil(0.05 · 75) = 4, so 1 + 3 · 4 = 13 cases; (120 + 3 · 60) · 1 = 300 steps.
  assert power.run_extent(cfg, 75) == (13, 300)
  # Without --steps_per_epoch an epoch is one pass over the stage's cases at batch 2: the
  # init on 1 case (1 step) x 120, then 5, 9 and 13 cases (3, 5, 7 steps) x 60 each:
  # 120 + 180 + 300 + 420 = 1020.
  auto = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps_per_epoch=0))
  assert power.run_extent(auto, 75) == (13, 1020)
  # --max_stage_steps=200 cuts each stage to whole epochs within 200 steps: 120, 180,
  # 40 x 5 = 200, 28 x 7 = 196.
  capped = dataclasses.replace(auto, train=dataclasses.replace(auto.train, max_stage_steps=200))
  assert power.run_extent(capped, 75) == (13, 120 + 180 + 200 + 196)
  assert config_lib.stage_epochs(capped, 13, 60) == (28, 7)
  assert config_lib.stage_epochs(capped, 1, 500) == (200, 1)
  # A count budget: 1 + 3 · 2 = 7 cases.
  count = dataclasses.replace(cfg, al=dataclasses.replace(cfg.al, budget="2"))
  assert power.run_extent(count, 75)[0] == 7


def test_a_cell_of_other_settings_is_refused_not_reused(tmp_path):
  ids = ["a", "b"]
  power._check_cell(None, tmp_path, ids, 960, "onednn")  # nothing yet: train it
  same = {"ids": ids, "steps": 960, "conv_impl": "onednn"}
  power._check_cell(same, tmp_path, ids, 960, "onednn")  # the same: reuse
  for cell in ({"ids": ids, "steps": 480}, {"ids": ["a", "c"], "steps": 960}, {"ids": ids}):
    with pytest.raises(ConfigError, match="cell.json holds a measurement"):
      power._check_cell(cell, tmp_path, ids, 960, "onednn")
  for cell in (same, {"ids": ids, "steps": 960}):  # another kernel, or none recorded
    with pytest.raises(ConfigError, match="conv kernel"):
      power._check_cell(cell, tmp_path, ids, 960, "s2d")


def test_similarity_sets_by_hand():
  """Six unit directions in the plane: three tight ones at 0, 5 and 10 degrees, three
  spread at 120, 200 and 300. The mean direction is near -2 degrees, so the medoid is
  t0; k-center greedy adds the farthest from it (a200, 160 degrees away), then the
  farthest from both (a120: 80 degrees from a200). The mutually most similar three are the
  tight ones."""
  angles = np.radians([0.0, 5.0, 10.0, 120.0, 200.0, 300.0])
  emb = np.stack([np.cos(angles), np.sin(angles)], axis=1) * 3.0  # scale does not matter
  ids = ["t0", "t5", "t10", "a120", "a200", "a300"]
  sets = power.similarity_sets(ids, emb, 3)
  assert sets == {"well": ["t0", "a120", "a200"], "poor": ["t0", "t5", "t10"]}
  with pytest.raises(ConfigError, match="--set_size=7"):
    power.similarity_sets(ids, emb, 7)


def test_minority_sets_take_the_smallest_stratum():
  pool = [f"a{i}" for i in range(8)] + [f"b{i}" for i in range(4)] + ["c0", "c1", "c2"]
  groups = {c: c[0] for c in pool}
  sets = power.choose_sets(pool, groups, 3, poor="smallest")
  assert sets["poor"] == ["c0", "c1", "c2"]
  assert sets["well"] == power.choose_sets(pool, groups, 3)["well"]
  with pytest.raises(ConfigError, match="smallest stratum's 3 cases"):
    power.choose_sets(pool, groups, 4, poor="smallest")
