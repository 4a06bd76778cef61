"""A real SIGKILL in the middle of a run, then the same command again (slow: two runs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tests._run_helpers import ROOT, run_cmd


@pytest.mark.slow
def test_sigkill_then_rerun_gives_the_uninterrupted_result(tmp_path):
  cache = tmp_path / "cache"
  ref = tmp_path / "ref"
  subprocess.run(run_cmd(ref, cache), cwd=ROOT, check=True, capture_output=True, timeout=1800)
  wd = tmp_path / "killed"
  proc = subprocess.Popen(
    run_cmd(wd, cache),
    cwd=ROOT,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
    start_new_session=True,
  )
  marker = wd / "round_001" / "DONE"
  deadline = time.monotonic() + 1800  # a guard against a hang, not a timing assertion
  while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
    time.sleep(0.2)
  assert proc.poll() is None, "the run finished before it could be killed"
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
  assert not (wd / "round_002" / "DONE").exists()
  subprocess.run(run_cmd(wd, cache), cwd=ROOT, check=True, capture_output=True, timeout=1800)
  a = json.loads((ref / "summary.json").read_text())
  b = json.loads((wd / "summary.json").read_text())
  assert [r["queried"] for r in a["rounds"]] == [r["queried"] for r in b["rounds"]]
  assert [r["pseudo"] for r in a["rounds"]] == [r["pseudo"] for r in b["rounds"]]
  for ra, rb in zip(a["rounds"], b["rounds"]):
    assert abs(ra["dice_mean"] - rb["dice_mean"]) <= 1e-4
