"""`experiments.device_check --quick` on the CPU: the accelerator check's three parts run,
its parity holds, and it writes its JSON and table."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests._run_helpers import ROOT


@pytest.mark.torch
def test_device_check_quick_runs_on_the_cpu(tmp_path):
  proc = subprocess.run(
    [sys.executable, "-m", "experiments.device_check", f"--out={tmp_path}", "--quick"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=1200,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  res = json.loads((tmp_path / "device_check.json").read_text())
  assert res["backend"] == "cpu" and res["quick"] is True
  assert [r["case"] for r in res["parity"]] == [
    "tiny eval logits",
    "tiny train logits",
    "tiny BatchNorm statistics",
    "tiny encoder maps",
  ]
  assert all(r["ok"] and r["max_abs"] <= 1e-4 for r in res["parity"])
  assert {(r["op"], r["precision"]) for r in res["speed"]} == {
    ("forward", "fp32"),
    ("train step", "fp32"),
  }
  assert all(r["ratio"] == pytest.approx(r["jax_s"] / r["monai_s"]) for r in res["speed"])
  sweep = res["sweep"]
  assert sweep["finished_in_budget"] and sweep["exit_code"] == 0
  assert sorted(sweep["cells_complete"]) == ["assft", "entropy", "random"]
  assert sweep["gpu_busy_fraction"] is None  # no nvidia-smi on the CPU machine
  assert "(i) parity" in (tmp_path / "device_check.txt").read_text()
