"""Several runs in one process (`assft_jax.group`): their training stages run as one
program, and every run ends as it ends alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from assft_jax import group, loop
from tests._run_helpers import ROOT, SMOKE
from tests._smoke import smoke_cfg

DICE_TOL = 1e-5


def _same(a: dict, b: dict) -> None:
  assert [r["round"] for r in a["rounds"]] == [r["round"] for r in b["rounds"]]
  for ra, rb in zip(a["rounds"], b["rounds"]):
    assert ra["queried"] == rb["queried"] and ra["pseudo"] == rb["pseudo"], ra["round"]
    assert abs(ra["dice_mean"] - rb["dice_mean"]) <= DICE_TOL, ra["round"]
    for cid, v in rb["dice_per_case"].items():
      assert abs(ra["dice_per_case"][cid] - v) <= DICE_TOL, (ra["round"], cid)


@pytest.fixture(scope="module")
def alone1(tmp_path_factory, cache):
  """Seed 1 of smoke.flags run alone."""
  return loop.run(smoke_cfg(tmp_path_factory.mktemp("alone1"), cache, "--seed=1"))


def test_two_runs_in_one_program_end_as_they_end_alone(smoke, alone1, tmp_path, cache):
  """Seeds 0 and 1 of smoke.flags (ASSFT: init, stage 1 and stage 3 in each round) as one
  group, against each alone (seed 0: the session's smoke run). On a CPU the group applies
  each run's own step in turn, so each computes what it computes alone."""
  _, _, alone0 = smoke
  cfgs = [smoke_cfg(tmp_path / f"g{s}", cache, f"--seed={s}") for s in (0, 1)]
  batchers = []

  def run(cfg, batcher):
    batchers.append(batcher)
    return loop.run(cfg, batcher=batcher)

  got = group.run_group(cfgs, run, batched="loop")
  _same(got[0], alone0)
  _same(got[1], alone1)
  # Round 0 of both came from the cache (the smoke run and the alone run trained it);
  # every later stage (stage 1 and 3 of rounds 1-2) trained both runs in one program.
  assert batchers[0].programs == [2, 2, 2, 2]
  made = json.loads((tmp_path / "g1" / "summary.json").read_text())["made_with"][-1]
  assert made["program"] == "loop"


def test_a_killed_group_resumes_with_nothing_lost(smoke, alone1, tmp_path, cache):
  """The group process of seeds 0 and 1 is killed (SIGKILL) once a run has finished
  round 1; the same command then completes both runs as they end alone."""
  wds = [tmp_path / f"seed_{s}" for s in (0, 1)]
  cmd = [sys.executable, "-m", "experiments.group", f"--flagfile={SMOKE}"]
  cmd += [f"--cell=assft:{s}:{wd}" for s, wd in zip((0, 1), wds)]
  cmd += [f"--cache_dir={cache}"]
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.monotonic() + 600
  while not any((wd / "round_001" / "DONE").exists() for wd in wds):
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    assert time.monotonic() < deadline
    time.sleep(0.2)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert not all(
    (wd / "summary.json").is_file() and json.loads((wd / "summary.json").read_text())["complete"]
    for wd in wds
  )
  done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  _, _, alone0 = smoke
  for wd, ref in zip(wds, (alone0, alone1)):
    got = json.loads((wd / "summary.json").read_text())
    assert got["complete"]
    _same(got, ref)
    assert not list(wd.rglob(".*.tmp*"))  # no temp file of the killed process left
