"""The report's power section from a made-up power.json, its absence, the
--power flag, and the run's `--budget` text read from summary.json before config.json.

The power.json numbers are chosen here and their printed forms derived in comments.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from assft_jax.report import ReportError, load_runs, write_report
from tests._report_helpers import md_table as _md_table
from tests._report_helpers import write_run as _run
from tests._run_helpers import ROOT


def _power(**over) -> dict:
  """A power.json as assft_jax.power writes it. noise_sd is the pooled SD of the two
  sets: sqrt((0.01^2 + 0.02^2) / 2) = sqrt(0.00025) = 0.0158114; effect 0.80 - 0.70 =
  0.10; ratio 0.10 / 0.0158114 = 6.3246."""
  d = {
    "mean": {"well": 0.80, "poor": 0.70},
    "sd": {"well": 0.01, "poor": 0.02},
    "noise_sd": math.sqrt(0.00025),
    "effect": 0.10,
    "ratio": 0.10 / math.sqrt(0.00025),
    "welch_p": 1.234e-4,
    "by_group": {
      "well": {"scanner_a": 0.85, "scanner_b": 0.75},
      "poor": {"scanner_a": 0.84, "scanner_b": 0.56},
    },
    "n_test": 10,
    "test_groups": {"scanner_a": 6, "scanner_b": 4},
    "set_size": 13,
    "steps": 480,
    "seeds": [0, 1, 2, 3, 4],
    "sets": {"well": ["a1", "b1"], "poor": ["a1", "a2"]},
  }
  return d | over


def _write_power(path: Path, d: dict) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(d))  # NaN is written as the JSON extension NaN, as json does
  return path


def _two_runs(root: Path) -> None:
  _run(root, "rand", 0, [0.3, 0.5])
  _run(root, "rand", 1, [0.3, 0.6])


def test_power_section_from_the_default_place(tmp_path):
  _two_runs(tmp_path)
  _write_power(tmp_path / "power" / "power.json", _power())
  write_report(tmp_path)
  md = (tmp_path / "report.md").read_text()
  # The report opens with it: before the first budget's section.
  assert md.index("## Power of this benchmark") < md.index("## Budget:")
  assert "13 cases each" in md and "480 optimiser steps" in md and "10 test cases" in md
  # Dice x 100: noise 1.58, effect 10.00, ratio 6.3 >= 4, p 1.23e-04, sets 80.00 ± 1.00
  # and 70.00 ± 2.00.
  rows = _md_table(md, "## Power of this benchmark")
  assert rows[1:] == [
    ["Training noise (SD over seeds, pooled over the two sets)", "1.58"],
    ["Selection effect (well − poor)", "10.00"],
    ["Effect / noise", "6.3× (meets the 4× target)"],
    ["Welch's t-test p, well vs poor over seeds", "1.23e-04"],
    ["Well-chosen set, mean ± SD over seeds", "80.00 ± 1.00"],
    ["Poorly chosen set, mean ± SD over seeds", "70.00 ± 2.00"],
    ["Set size", "13 cases"],
    ["Optimiser steps", "480"],
    ["Seeds", "0, 1, 2, 3, 4"],
  ]
  # Per stratum: scanner_a 85 vs 84 (1.00), scanner_b 75 vs 56 (19.00).
  assert _md_table(md, "#### Mean test Dice per stratum")[1:] == [
    ["scanner_a", "6", "85.00", "84.00", "1.00"],
    ["scanner_b", "4", "75.00", "56.00", "19.00"],
  ]
  # Both numbers again with the budget's comparisons.
  budget = md.split("## Budget:")[1]
  assert "training noise SD 1.58, selection effect 10.00, ratio 6.3×" in budget


def test_power_from_a_given_path_that_falls_short(tmp_path):
  _two_runs(tmp_path / "runs")
  # effect 0.02: ratio 0.02 / 0.0158114 = 1.26 < 4. One poor seed: its SD is NaN ("–"),
  # and Welch's p is NaN ("n/a"). A stratum without test cases has NaN Dice.
  d = _power(effect=0.02, ratio=0.02 / math.sqrt(0.00025), welch_p=math.nan)
  d["sd"]["poor"] = math.nan
  d["test_groups"]["scanner_c"] = 0
  d["by_group"]["well"]["scanner_c"] = math.nan
  d["by_group"]["poor"]["scanner_c"] = math.nan
  path = _write_power(tmp_path / "elsewhere" / "p.json", d)
  write_report(tmp_path / "runs", power=path)
  md = (tmp_path / "runs" / "report.md").read_text()
  rows = dict(_md_table(md, "## Power of this benchmark")[1:])
  assert rows["Effect / noise"] == "1.3× (falls short of the 4× target)"
  assert rows["Welch's t-test p, well vs poor over seeds"] == "n/a"
  assert rows["Poorly chosen set, mean ± SD over seeds"] == "70.00 ± –"
  strata = _md_table(md, "#### Mean test Dice per stratum")
  assert strata[3] == ["scanner_c", "0", "n/a", "n/a", "n/a"]


def test_no_power_one_line(tmp_path):
  _two_runs(tmp_path)
  write_report(tmp_path)
  md = (tmp_path / "report.md").read_text()
  section = md.split("## Power of this benchmark")[1].split("## ")[0].strip()
  assert section.count("\n") == 0 and "not measured for these runs" in section
  assert "training noise SD" not in md


def test_bad_power_input_is_one_clear_error(tmp_path):
  _two_runs(tmp_path)
  with pytest.raises(ReportError, match="--power=.*nope.json"):
    write_report(tmp_path, power=tmp_path / "nope.json")
  d = _power()
  del d["noise_sd"]
  bad = _write_power(tmp_path / "power" / "power.json", d)
  with pytest.raises(ReportError, match=f"{bad}: lacks 'noise_sd'"):
    write_report(tmp_path)
  _write_power(bad, _power(steps="many"))
  with pytest.raises(ReportError, match="steps is 'many'"):
    write_report(tmp_path)


def test_cli_power_flag(tmp_path):
  _two_runs(tmp_path / "runs")
  good = _write_power(tmp_path / "p.json", _power())
  for flag, code in ((f"--power={good}", 0), (f"--power={tmp_path / 'missing.json'}", 1)):
    proc = subprocess.run(
      [sys.executable, "-m", "experiments.report", str(tmp_path / "runs"), flag],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=600,
    )
    assert proc.returncode == code, proc.stderr[-1500:]
    assert "Traceback" not in proc.stderr
  assert "--power=" in proc.stderr and "missing.json" in proc.stderr
  assert "6.3× (meets the 4× target)" in (tmp_path / "runs" / "report.md").read_text()


# ------------------------------------------------------------ the --budget text


def test_summary_budget_comes_before_config_json(tmp_path):
  # Seed 0: summary says 10%, config.json says 5%: the summary wins. Seed 1: summary
  # says 10% and there is no config.json. Seed 2: only config.json (5%), the fallback.
  for seed in range(3):
    _run(tmp_path, "rand", seed, [0.3, 0.5])
  for seed in (0, 1):
    path = tmp_path / "rand" / "5pct" / f"seed_{seed}" / "summary.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"budget": " 10% "}))
  (tmp_path / "rand" / "5pct" / "seed_1" / "config.json").unlink()
  got = {r.seed: r.budget.text for r in load_runs(tmp_path)}
  assert got == {0: "10%", 1: "10%", 2: "5%"}
  path.write_text(json.dumps(json.loads(path.read_text()) | {"budget": 5}))
  with pytest.raises(ReportError, match=f"{path}: budget is 5"):
    load_runs(tmp_path)
