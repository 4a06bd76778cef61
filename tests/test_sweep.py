"""Sweep planning and bookkeeping with a fake command runner (no subprocesses)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from assft_jax import sweep
from assft_jax.errors import EXIT_PENDING


def _summary(workdir: Path, complete: bool) -> None:
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "summary.json").write_text(
    json.dumps({"strategy": "x", "seed": 0, "complete": complete, "rounds": []})
  )


def _arg(cmd: list[str], flag: str) -> str:
  return next(a.split("=", 1)[1] for a in cmd if a.startswith(f"--{flag}="))


class FakeRunner:
  """Records commands; exit code by (strategy, seed); marks successful cells complete."""

  def __init__(self, codes: dict[tuple[str, int], int]):
    self.codes, self.calls = codes, []

  def __call__(self, cmd: list[str]) -> int:
    self.calls.append(cmd)
    key = (_arg(cmd, "strategy"), int(_arg(cmd, "seed")))
    rc = self.codes.get(key, 0)
    if rc == 0:
      _summary(Path(_arg(cmd, "workdir")), complete=True)
    return rc


@pytest.fixture
def flagfile(tmp_path):
  f = tmp_path / "run.flags"
  f.write_text("--rounds=2\n")
  return str(f)


def test_plan_and_command(tmp_path, flagfile):
  cells = sweep.plan_cells(["assft", "rand", "rand+ssft"], [0, 2], tmp_path)
  assert [(c.strategy, c.ssft, c.seed) for c in cells] == [
    ("assft", True, 0),
    ("assft", True, 2),
    ("rand", False, 0),
    ("rand", False, 2),
    ("rand", True, 0),
    ("rand", True, 2),
  ]
  assert cells[1].workdir == tmp_path / "assft" / "seed_2"
  assert cells[5].workdir == tmp_path / "rand+ssft" / "seed_2"
  cmd = sweep.run_command(cells[1], [flagfile], ["--epochs_round=1"])
  assert cmd == [
    sys.executable,
    "-m",
    "experiments.run",
    f"--flagfile={flagfile}",
    "--strategy=assft",
    "--ssft",
    "--seed=2",
    f"--workdir={tmp_path / 'assft' / 'seed_2'}",
    "--epochs_round=1",
  ]
  assert "--nossft" in sweep.run_command(cells[2], [flagfile])
  assert "--ssft" in sweep.run_command(cells[4], [flagfile])
  lo = sweep.plan_cells(["lower_bound"], [1], tmp_path)[0]
  assert sweep.run_command(lo, [], python="py") == [
    "py",
    "-m",
    "experiments.run",
    "--lower_bound",
    "--seed=1",
    f"--workdir={tmp_path / 'lower_bound' / 'seed_1'}",
  ]


def test_skips_complete_reruns_incomplete_lists_failures_and_waiting(tmp_path, flagfile):
  out = tmp_path / "sw"
  _summary(out / "assft" / "seed_0", complete=True)  # skipped
  _summary(out / "assft" / "seed_1", complete=False)  # resumed
  (out / "rand" / "seed_0").mkdir(parents=True)
  (out / "rand" / "seed_0" / "summary.json").write_text("{broken")  # rerun, not a crash
  cells = sweep.plan_cells(["assft", "rand", "dkd"], [0, 1], out)
  runner = FakeRunner({("rand", 1): 2, ("dkd", 0): 3, ("dkd", 1): -9})
  logs = []
  res = sweep.run_sweep(cells, [flagfile], runner=runner, log=logs.append)
  ran = [(_arg(c, "strategy"), int(_arg(c, "seed"))) for c in runner.calls]
  assert ran == [("assft", 1), ("rand", 0), ("rand", 1), ("dkd", 0), ("dkd", 1)]
  assert [c.name for c in res.skipped] == ["assft/seed_0"]
  assert [c.name for c in res.waiting] == ["dkd/seed_0"]
  assert [(c.name, rc) for c, rc in res.failed] == [("rand/seed_1", 2), ("dkd/seed_1", -9)]
  assert res.exit_code == 1
  assert "FAILED (exit 2): rand/seed_1" in logs[-1]
  assert "waiting for labels: dkd/seed_0" in logs[-1]
  # Second pass: the finished cells are skipped; only the unfinished ones run again.
  runner2 = FakeRunner({("dkd", 0): 3})
  res2 = sweep.run_sweep(cells, [flagfile], runner=runner2, log=lambda s: None)
  assert [c.name for c in res2.ran] == ["rand/seed_1", "dkd/seed_0", "dkd/seed_1"]
  assert res2.exit_code == EXIT_PENDING and not res2.failed


def test_all_done_exit_zero_and_runner_oserror_is_a_failure(tmp_path, flagfile):
  cells = sweep.plan_cells(["rand"], [0, 1], tmp_path)

  def broken(cmd):
    if "--seed=0" in cmd:
      raise FileNotFoundError("no python")
    return FakeRunner({})(cmd)

  res = sweep.run_sweep(cells, [flagfile], runner=broken, log=lambda s: None)
  assert [c.name for c, _ in res.failed] == ["rand/seed_0"]
  res2 = sweep.run_sweep(cells[1:], [flagfile], runner=FakeRunner({}), log=lambda s: None)
  assert res2.exit_code == 0 and [c.name for c in res2.skipped] == ["rand/seed_1"]


def test_bad_arguments(tmp_path):
  assert sweep.parse_seeds("0,2-4,2") == [0, 2, 3, 4]
  assert sweep.parse_strategies(" assft, rand,assft") == ["assft", "rand"]
  for bad in ("", "a", "-1", "3-1"):
    with pytest.raises(sweep.SweepError, match="--seeds"):
      sweep.parse_seeds(bad)
  for bad in ("", "a/b", "../x", ".."):
    with pytest.raises(sweep.SweepError, match="--strategies"):
      sweep.parse_strategies(bad)
  for extra in (
    ["--seed=3"],
    ["--workdir", "/x"],
    ["--strategy=rand"],
    ["--nossft"],
    ["--upper_bound"],
  ):
    with pytest.raises(sweep.SweepError, match="set per cell"):
      sweep.check_extra(extra)
  sweep.check_extra(["--seeds_extra=1", "--epochs_round=2"])
  with pytest.raises(sweep.SweepError, match="--flagfile.*missing.flags"):
    sweep.run_sweep(
      sweep.plan_cells(["rand"], [0], tmp_path),
      [str(tmp_path / "missing.flags")],
      runner=FakeRunner({}),
      log=lambda s: None,
    )


def test_cli_keeps_flagfile_for_the_runs_and_passes_unknown_flags(flagfile, tmp_path):
  from experiments import sweep as cli

  flagfiles, extra = cli.parse_argv(
    [
      "sweep",
      f"--flagfile={flagfile}",
      "--strategies=assft,rand",
      "--seeds",
      "0,1",
      f"--out={tmp_path}",
      "--epochs_round=2",
      "--norm=batch",
    ]
  )
  assert flagfiles == [flagfile]
  assert extra == ["--epochs_round=2", "--norm=batch"]
  assert cli.FLAGS.strategies == "assft,rand" and cli.FLAGS.seeds == "0,1"
  assert cli.FLAGS.out == str(tmp_path)
