"""The benchmark's arms on the smoke flagfile: the compute-matched control
(--stage3=supervised), Table 8's unlabeled Dice, and round 0 shared across the arms of a
seed through the cache.

One SSFT run on seed 1 is shared (module fixture); seed 1 keeps its round-0 cache entry
apart from test_loop's seed-0 runs. The other runs of this file copy its round 0. The
runs take minutes on the 2-core machine: they are `slow` (test_loop's default smoke run
checks the summary's stage3 and unlabeled_dice fields).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from assft_jax import engine, loop
from assft_jax import session as session_lib
from assft_jax import workdir as wd_lib
from tests._smoke import smoke_cfg

SEED = "--seed=1"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
  return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def ssft(tmp_path_factory, cache):
  wd = tmp_path_factory.mktemp("ssft")
  return wd, loop.run(smoke_cfg(wd, cache, SEED))


def _steps(wd: Path, r: int) -> int:
  """Optimiser steps of round r: the last record's step counter of each stage's log (the
  counter starts at 0 every stage)."""
  n = 0
  for stage in ("s1", "s3"):
    path = wd_lib.round_dir(wd, r) / f"train_{stage}.jsonl"
    if path.exists():
      n += json.loads(path.read_text().splitlines()[-1])["step"]
  return n


@pytest.mark.slow
def test_the_supervised_control_gets_ssft_steps_without_pseudo_labels(ssft, cache, tmp_path):
  wd_ssft, s = ssft
  wd = tmp_path / "sup"
  sup = loop.run(smoke_cfg(wd, cache, SEED, "--nossft", "--stage3=supervised"))
  assert (s["stage3"], sup["stage3"]) == ("pseudo", "supervised")
  for r in (1, 2):
    # smoke.flags: 2 epochs x 1 step per stage; SSFT and the control run stages 1 and 3.
    assert _steps(wd, r) == _steps(wd_ssft, r) == 4
    assert (wd_lib.round_dir(wd, r) / "train_s3.jsonl").exists()
    assert not (wd_lib.round_dir(wd, r) / "ssft.json").exists()
  assert all(row["pseudo"] == [] and "unlabeled_dice" not in row for row in sup["rounds"])
  assert all(len(row["pseudo"]) > 0 for row in s["rounds"][1:])


@pytest.mark.slow
def test_unlabeled_dice_is_the_stage1_model_on_every_unlabeled_case(
  ssft, cache, tmp_path, monkeypatch
):
  """Round 2 again (as after a crash before its query), with Session.fit wrapped to keep
  the stage-1 network; Table 8's Dice must be engine.evaluate's Dice of that network on
  the unlabeled cases (another pass: sliding-window logits, per-class Dice, mean)."""
  wd_ssft, s = ssft
  wd = tmp_path / "again"
  shutil.copytree(wd_ssft, wd)
  shutil.rmtree(wd_lib.round_dir(wd, 2))
  kept = {}
  fit = session_lib.Session.fit

  def keep_stage1(self, variables, labels, pseudo, epochs, *, round_, stage):
    out = fit(self, variables, labels, pseudo, epochs, round_=round_, stage=stage)
    if stage == "s1":
      kept["sess"], kept["variables"], kept["labeled"] = self, out, set(labels)
    return out

  monkeypatch.setattr(session_lib.Session, "fit", keep_stage1)
  again = loop.run(smoke_cfg(wd, cache, SEED))
  row = again["rounds"][2]
  split = json.loads((wd / "split.json").read_text())
  unlabeled = [c for c in split["pool"] if c not in kept["labeled"]]
  assert list(row["unlabeled_dice"]) == unlabeled and set(row["pseudo"]) <= set(unlabeled)
  ssft_json = json.loads((wd_lib.round_dir(wd, 2) / "ssft.json").read_text())
  assert ssft_json["unlabeled_dice"] == row["unlabeled_dice"]
  sess = kept["sess"]
  ref = engine.evaluate(
    sess.module,
    kept["variables"],
    sess.volumes,
    unlabeled,
    num_classes=len(sess.class_names),
    roi=sess.cfg.train.patch,
    sw_batch_size=sess.cfg.train.sw_batch_size,
  )
  for cid in unlabeled:
    assert abs(row["unlabeled_dice"][cid] - ref["per_case"][cid]["mean"]) <= 1e-6, cid
  # The uninterrupted run recorded the same numbers (the rerun is deterministic).
  assert s["rounds"][2]["unlabeled_dice"] == row["unlabeled_dice"]
  assert list(s["rounds"][1]["unlabeled_dice"]) == [
    c for c in split["pool"] if c not in s["rounds"][0]["queried"] + s["rounds"][1]["queried"]
  ]


def _cache_without_round0(cache: Path, dst: Path) -> Path:
  shutil.copytree(cache, dst, ignore=lambda d, names: ["round0"] if Path(d) == cache else [])
  return dst


@pytest.mark.slow
def test_round0_is_copied_from_another_arm_and_changes_nothing(ssft, cache, tmp_path, caplog):
  wd_ssft, s = ssft
  argv = (SEED, "--strategy=entropy", "--nossft", "--rounds=1")
  # The reference: the same arm with no round 0 in its cache trains round 0 itself.
  ref_cache = _cache_without_round0(cache, tmp_path / "ref_cache")
  with caplog.at_level(logging.INFO, logger="assft_jax.loop"):
    ref = loop.run(smoke_cfg(tmp_path / "ref", ref_cache, *argv))
  assert "round 0 stored in" in caplog.text and "round 0 copied" not in caplog.text
  caplog.clear()
  wd = tmp_path / "b"
  with caplog.at_level(logging.INFO, logger="assft_jax.loop"):
    got = loop.run(smoke_cfg(wd, cache, *argv))
  (entry,) = (cache / "round0").iterdir()
  assert f"round 0 copied from {entry}" in caplog.text
  assert "round 0 stored" not in caplog.text
  assert got["stage3"] == "none" and not list(wd.glob("round_*/train_s3.jsonl"))
  # Round 0 is the SSFT run's, file for file (model, pool, query, slices, logs, row).
  files = sorted(p.relative_to(wd_ssft / "round_000") for p in (wd_ssft / "round_000").rglob("*"))
  assert files == sorted(p.relative_to(wd / "round_000") for p in (wd / "round_000").rglob("*"))
  for f in files:
    if (wd / "round_000" / f).is_file():
      assert (wd / "round_000" / f).read_bytes() == (wd_ssft / "round_000" / f).read_bytes(), f
  assert got["rounds"][0] == s["rounds"][0]
  # And the arm's results are those of the arm that trained round 0 itself, bit for bit.
  assert [r["queried"] for r in got["rounds"]] == [r["queried"] for r in ref["rounds"]]
  assert [r["dice_per_case"] for r in got["rounds"]] == [r["dice_per_case"] for r in ref["rounds"]]
  assert got["rounds"][1]["queried"] != s["rounds"][1]["queried"]  # entropy is not assft

  # A kill right after the copy (round_000 in place, no summary yet) resumes to the same.
  killed = tmp_path / "killed"
  killed.mkdir()
  for name in ("config.json", "split.json"):
    shutil.copy(wd / name, killed / name)
  shutil.copytree(wd / "round_000", killed / "round_000")
  again = loop.run(smoke_cfg(killed, cache, *argv))
  assert again["rounds"] == got["rounds"]


def test_round0_is_not_shared_across_seeds_or_settings(tmp_path):
  """The key covers everything but what cannot change round 0."""
  wd, cache = tmp_path / "wd", tmp_path / "cache"

  def key(*argv: str) -> str:
    return wd_lib.round0_key(smoke_cfg(wd, cache, *argv), "f0", "data")

  base = key(SEED)
  for same in (["--strategy=random", "--nossft"], ["--rounds=3", "--budget=1", "--tau_c=2"]):
    assert key(SEED, *same) == base
  assert key(SEED, "--workdir=/elsewhere", "--cache_dir=/c") == base
  for other in ("--seed=2", "--epochs_init=3", "--lr=0.01", "--init_pick=first"):
    assert key(SEED, other) != base, other
  assert wd_lib.round0_key(smoke_cfg(wd, cache, SEED), "f1", "data") != base
  assert len({key(SEED, f"--test_fraction={f}") for f in (0.2, 0.25, 0.3)}) == 3
