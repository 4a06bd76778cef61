"""Sweep planning, scheduling and bookkeeping with a fake launcher (no training), and the
real launcher's CPU pinning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from assft_jax import sweep
from assft_jax.errors import EXIT_PENDING


def _summary(workdir: Path, complete: bool, rounds=()) -> None:
  workdir.mkdir(parents=True, exist_ok=True)
  rows = [{"round": r} for r in rounds]
  (workdir / "summary.json").write_text(
    json.dumps({"strategy": "x", "seed": 0, "complete": complete, "rounds": rows})
  )


def _arg(cmd: list[str], flag: str) -> str:
  return next(a.split("=", 1)[1] for a in cmd if a.startswith(f"--{flag}="))


class FakeJob:
  """A cell that runs for `ticks` polls: after `r0` polls its summary holds round 0; at
  the end it exits with `rc` (0 also marks it complete)."""

  def __init__(self, launcher: FakeLauncher, cmd: list[str], rc: int, ticks: int, r0: int):
    self.launcher, self.cmd, self.rc, self.left, self.r0 = launcher, cmd, rc, ticks, ticks - r0
    self.workdir = Path(_arg(cmd, "workdir"))
    self.terminated = self.waited = False

  def poll(self):
    fl = self.launcher
    if fl.polls == fl.interrupt_at:
      raise KeyboardInterrupt
    fl.polls += 1
    self.left -= 1
    if self.left == self.r0:
      _summary(self.workdir, complete=False, rounds=[0])
    if self.left > 0:
      return None
    fl.active.remove(self)
    if self.rc == 0:
      _summary(self.workdir, complete=True, rounds=[0, 1])
    return self.rc

  def terminate(self):
    self.terminated = True

  def wait(self):
    self.waited = True
    return -15


class FakeLauncher:
  """Starts FakeJobs, exit code by (token, seed), (polls, round 0 after) by token
  (default (ticks, 1)); records per start (cmd, log, cpus, the commands running beside
  it) and the most cells alive at once."""

  def __init__(self, codes=None, ticks=1, slow=None, interrupt_at=None):
    self.codes, self.ticks, self.slow = codes or {}, ticks, slow or {}
    self.interrupt_at = interrupt_at
    self.calls, self.active, self.jobs, self.max_active, self.polls = [], [], [], 0, 0
    self.envs = []

  def __call__(self, cmd, log, cpus, env=None):
    self.calls.append((cmd, log, cpus, [j.cmd for j in self.active]))
    self.envs.append(env)
    wd = Path(_arg(cmd, "workdir"))
    rc = self.codes.get((wd.parent.name, int(_arg(cmd, "seed"))), 0)
    job = FakeJob(self, cmd, rc, *self.slow.get(wd.parent.name, (self.ticks, 1)))
    self.active.append(job)
    self.jobs.append(job)
    self.max_active = max(self.max_active, len(self.active))
    return job

  def ran(self):
    return [(Path(_arg(c, "workdir")).parent.name, int(_arg(c, "seed"))) for c, *_ in self.calls]


def _quiet(s):
  pass


@pytest.fixture
def flagfile(tmp_path):
  f = tmp_path / "run.flags"
  f.write_text("--rounds=2\n")
  return str(f)


def test_plan_and_command(tmp_path, flagfile):
  cells = sweep.plan_cells(["assft", "rand", "rand+ssft", "dkd_asd+sup"], [0, 2], tmp_path)
  # seed-major: a seed's arms run together, after its round 0
  assert [(c.strategy, c.ssft, c.stage3, c.seed) for c in cells] == [
    ("assft", True, "auto", 0),
    ("rand", False, "auto", 0),
    ("rand", True, "auto", 0),
    ("dkd_asd", False, "supervised", 0),
    ("assft", True, "auto", 2),
    ("rand", False, "auto", 2),
    ("rand", True, "auto", 2),
    ("dkd_asd", False, "supervised", 2),
  ]
  assert cells[4].workdir == tmp_path / "assft" / "seed_2"
  assert cells[7].workdir == tmp_path / "dkd_asd+sup" / "seed_2"
  cmd = sweep.run_command(cells[4], [flagfile], ["--epochs_round=1"])
  assert cmd == [
    sys.executable,
    "-m",
    "experiments.run",
    f"--flagfile={flagfile}",
    "--strategy=assft",
    "--ssft",
    "--stage3=auto",
    "--seed=2",
    f"--workdir={tmp_path / 'assft' / 'seed_2'}",
    "--epochs_round=1",
  ]
  assert sweep.run_command(cells[1], [flagfile])[4:7] == [
    "--strategy=rand",
    "--nossft",
    "--stage3=auto",
  ]
  assert sweep.run_command(cells[2], [flagfile])[4:7] == [
    "--strategy=rand",
    "--ssft",
    "--stage3=auto",
  ]
  assert sweep.run_command(cells[3], [])[3:6] == [
    "--strategy=dkd_asd",
    "--nossft",
    "--stage3=supervised",
  ]
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
  launcher = FakeLauncher({("rand", 1): 2, ("dkd", 0): 3, ("dkd", 1): -9})
  logs = []
  res = sweep.run_sweep(cells, [flagfile], launch=launcher, log=logs.append, poll_s=0)
  assert launcher.ran() == [("rand", 0), ("dkd", 0), ("assft", 1), ("rand", 1), ("dkd", 1)]
  assert all(log is None and cpus is None for _, log, cpus, _ in launcher.calls)  # 1 job
  assert [c.name for c in res.skipped] == ["assft/seed_0"]
  assert [c.name for c in res.waiting] == ["dkd/seed_0"]
  assert [(c.name, rc) for c, rc in res.failed] == [("rand/seed_1", 2), ("dkd/seed_1", -9)]
  assert res.exit_code == 1
  assert "FAILED (exit 2): rand/seed_1" in logs[-1]
  assert "waiting for labels: dkd/seed_0" in logs[-1]
  # Second pass: the finished cells are skipped; only the unfinished ones run again.
  launcher2 = FakeLauncher({("dkd", 0): 3})
  res2 = sweep.run_sweep(cells, [flagfile], launch=launcher2, log=_quiet, poll_s=0)
  assert [c.name for c in res2.ran] == ["dkd/seed_0", "rand/seed_1", "dkd/seed_1"]
  assert res2.exit_code == EXIT_PENDING and not res2.failed


def test_all_done_exit_zero_and_launch_oserror_is_a_failure(tmp_path, flagfile):
  cells = sweep.plan_cells(["rand"], [0, 1], tmp_path)
  fake = FakeLauncher()

  def broken(cmd, log, cpus, env=None):
    if "--seed=0" in cmd:
      raise FileNotFoundError("no python")
    return fake(cmd, log, cpus, env)

  res = sweep.run_sweep(cells, [flagfile], launch=broken, log=_quiet, poll_s=0)
  assert [(c.name, rc) for c, rc in res.failed] == [("rand/seed_0", -1)]
  res2 = sweep.run_sweep(cells[1:], [flagfile], launch=FakeLauncher(), log=_quiet, poll_s=0)
  assert res2.exit_code == 0 and [c.name for c in res2.skipped] == ["rand/seed_1"]


def test_parallel_bound_pinning_and_round_zero_order(tmp_path, flagfile):
  """2 jobs on CPUs {0, 1}, 2 seeds x (a bound and three AL arms). Cells take 3 polls,
  the leaders (assft) 6 with round 0 after 4. Never more than 2 alive; each on its own
  CPU, logging to <workdir>/run.log; an AL cell starts only once its seed's leader (its
  first AL cell) has round 0; failures are collected."""
  cells = sweep.plan_cells(["lower_bound", "assft", "rand", "rand+sup"], [0, 1], tmp_path)
  launcher = FakeLauncher({("rand", 1): 2}, ticks=3, slow={"assft": (6, 4)})
  logs = []
  res = sweep.run_sweep(
    cells, [flagfile], launch=launcher, log=logs.append, jobs=2, cpus=[0, 1], poll_s=0
  )
  assert launcher.max_active == 2
  assert len(res.ran) == 8 and [(c.name, rc) for c, rc in res.failed] == [("rand/seed_1", 2)]
  by_wd = {}
  for cmd, log, cpus, beside in launcher.calls:
    wd = Path(_arg(cmd, "workdir"))
    by_wd[wd] = cpus
    assert log == wd / "run.log"
    assert len(cpus) == 1 and cpus <= {0, 1}
    for other in beside:  # the cells alive beside it hold the other CPU
      assert by_wd[Path(_arg(other, "workdir"))] != cpus
    if wd.parent.name in ("rand", "rand+sup"):
      assert sweep.has_round_zero(wd.parent.parent / "assft" / wd.name), wd
  # When lower_bound/0 ends (3 polls), assft/0 has no round 0 yet (4 polls): seed 0's
  # other arms wait, and seed 1's bound, next in line and ready, overtakes them.
  assert launcher.ran()[:3] == [("lower_bound", 0), ("assft", 0), ("lower_bound", 1)]
  assert any("[cpus 1; log " in line for line in logs)
  assert "FAILED with exit code 2" in " ".join(logs) and "run.log" in " ".join(logs)


def test_ctrl_c_stops_the_running_cells(tmp_path, flagfile):
  cells = sweep.plan_cells(["lower_bound", "upper_bound", "assft"], [0], tmp_path)
  launcher = FakeLauncher(ticks=10, interrupt_at=3)
  with pytest.raises(KeyboardInterrupt):
    sweep.run_sweep(cells, [flagfile], launch=launcher, log=_quiet, jobs=2, cpus=[0, 1], poll_s=0)
  assert len(launcher.jobs) == 2
  assert all(j.terminated and j.waited for j in launcher.jobs)


def test_cpu_slots():
  assert sweep.cpu_slots(1) == [None]
  assert sweep.cpu_slots(2, [0, 1]) == [{0}, {1}]
  assert sweep.cpu_slots(2, [4, 5, 6, 7, 9]) == [{4, 5}, {6, 7}]  # cores // jobs each
  assert sweep.cpu_slots(3, [0, 1]) == [{0}, {1}, {0}]  # more jobs than CPUs: shared
  with pytest.raises(sweep.SweepError, match="--jobs"):
    sweep.cpu_slots(0)


def test_launched_child_is_pinned_and_logs_to_its_file(tmp_path):
  """The real launcher, from a fresh sweep process as the CLI runs it: a child pinned to
  one CPU sees only that CPU from its first line (XLA sizes its thread pools from this
  mask), and its output lands in the log. The pinning runs in the forked child before
  exec (preexec_fn), which is only safe in a single-threaded parent, so the sweep
  process must not have pulled in jax (and its threads)."""
  cpu = min(os.sched_getaffinity(0))
  log = tmp_path / "cell" / "run.log"
  child = [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"]
  parent = (
    "import sys, experiments.sweep\n"
    "from assft_jax import sweep\n"
    "assert 'jax' not in sys.modules, 'the sweep imported jax'\n"
    f"job = sweep.subprocess_launch({child!r}, __import__('pathlib').Path({str(log)!r}), "
    f"frozenset({{{cpu}}}))\n"
    "sys.exit(job.wait())\n"
  )
  subprocess.run([sys.executable, "-c", parent], check=True)
  assert log.read_text().strip() == f"[{cpu}]"


def test_bad_arguments(tmp_path):
  assert sweep.parse_seeds("0,2-4,2") == [0, 2, 3, 4]
  assert sweep.parse_strategies(" assft, rand,assft") == ["assft", "rand"]
  assert sweep.parse_strategies("random+sup,assft+sup") == ["random+sup", "assft+sup"]
  for bad in ("", "a", "-1", "3-1"):
    with pytest.raises(sweep.SweepError, match="--seeds"):
      sweep.parse_seeds(bad)
  for bad in ("", "a/b", "../x", "..", "random+ssft+sup", "lower_bound+sup"):
    with pytest.raises(sweep.SweepError, match="--strategies"):
      sweep.parse_strategies(bad)
  for extra in (
    ["--seed=3"],
    ["--workdir", "/x"],
    ["--strategy=rand"],
    ["--nossft"],
    ["--stage3=supervised"],
    ["--upper_bound"],
  ):
    with pytest.raises(sweep.SweepError, match="set per cell"):
      sweep.check_extra(extra)
  sweep.check_extra(["--seeds_extra=1", "--epochs_round=2"])
  with pytest.raises(sweep.SweepError, match="--flagfile.*missing.flags"):
    sweep.run_sweep(
      sweep.plan_cells(["rand"], [0], tmp_path),
      [str(tmp_path / "missing.flags")],
      launch=FakeLauncher(),
      log=_quiet,
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
      "--jobs=2",
      "--norm=batch",
    ]
  )
  assert cli.FLAGS.jobs == 2
  assert flagfiles == [flagfile]
  assert extra == ["--epochs_round=2", "--norm=batch"]
  assert cli.FLAGS.strategies == "assft,rand" and cli.FLAGS.seeds == "0,1"
  assert cli.FLAGS.out == str(tmp_path)


def test_the_sweep_checks_each_kind_of_run_before_any_cell(tmp_path):
  from tests._run_helpers import SMOKE

  cells = sweep.plan_cells(["assft", "random", "lower_bound"], [0, 1], tmp_path)
  lines: list[str] = []
  sweep.check_plans(cells, [str(SMOKE)], ["--rounds=3"], log=lines.append)
  assert len(lines) == 2  # one with SSFT, one without; bound runs have no rounds
  assert "with SSFT" in lines[0] and "round(s) 3" in lines[0]
  assert "without SSFT" in lines[1] and "no SSFT" in lines[1]
  from assft_jax.config import ConfigError

  with pytest.raises(ConfigError, match="target pool holds 9"):
    sweep.check_plans(cells, [str(SMOKE)], ["--budget=5", "--rounds=3"], log=lines.append)


def test_the_sweep_cli_refuses_a_budget_the_pool_cannot_give_before_any_cell(tmp_path):
  from tests._run_helpers import ROOT, SMOKE

  out = tmp_path / "sweep"
  cmd = [sys.executable, "-m", "experiments.sweep", f"--flagfile={SMOKE}", "--strategies=assft"]
  cmd += ["--seeds=0", f"--out={out}", "--budget=5", "--rounds=3", "--noreport"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1, proc.stderr
  assert "target pool holds 9" in proc.stderr and "Traceback" not in proc.stderr
  assert not (out / "assft").exists()


@pytest.mark.slow
def test_the_issue_sweep_completes_every_cell(tmp_path):
  """Two seeds of ASSFT, DKD+ASD and RAND for 3 rounds on smoke.flags: ASSFT's third query
  lifts §3.4's exclusion; every cell completes, and the report says where it applied."""
  from tests._run_helpers import ROOT, SMOKE

  out = tmp_path / "x"
  cmd = [sys.executable, "-m", "experiments.sweep", f"--flagfile={SMOKE}", "--seeds=5,6"]
  cmd += ["--strategies=assft,dkd_asd,random", f"--out={out}", "--rounds=3"]
  cmd += [f"--cache_dir={tmp_path / 'cache'}"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3000)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  for token in ("assft", "dkd_asd", "random"):
    for seed in (5, 6):
      assert sweep.is_complete(out / token / f"seed_{seed}"), (token, seed)
  assert "exclusion of the previous round's pseudo-labelled cases was lifted" in (
    (out / "report.md").read_text()
  )


def test_device_slots_place_one_cell_per_device_group_and_share_memory_when_they_must():
  four = ["0", "1", "2", "3"]
  # One cell per GPU: each sees its own, and nothing limits its memory.
  assert sweep.device_slots(four, 4) == [{"CUDA_VISIBLE_DEVICES": d} for d in four]
  # Two GPUs per cell: two groups.
  assert sweep.device_slots(four, 2, per_cell=2) == [
    {"CUDA_VISIBLE_DEVICES": "0,1"},
    {"CUDA_VISIBLE_DEVICES": "2,3"},
  ]
  # Three cells on one GPU: no preallocation, 0.9 / 3 of its memory each, in both names.
  slots = sweep.device_slots(["0"], 3)
  share = {
    "CUDA_VISIBLE_DEVICES": "0",
    "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
    "XLA_CLIENT_MEM_FRACTION": "0.30",
    "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.30",
  }
  assert slots == [share] * 3
  # Five cells on two GPUs: round-robin, 3 and 2 sharers.
  slots = sweep.device_slots(["0", "1"], 5)
  assert [s["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "1", "0", "1", "0"]
  assert [s["XLA_CLIENT_MEM_FRACTION"] for s in slots] == ["0.30", "0.45", "0.30", "0.45", "0.30"]
  # A TPU chip per cell: the chip and a one-chip process's bounds.
  (tpu,) = sweep.device_slots(["3"], 1, platform="tpu")
  assert tpu == {
    "TPU_VISIBLE_CHIPS": "3",
    "TPU_CHIPS_PER_PROCESS_BOUNDS": "1,1,1",
    "TPU_PROCESS_BOUNDS": "1,1,1",
  }
  with pytest.raises(sweep.SweepError, match="has 2 gpu device"):
    sweep.device_slots(["0", "1"], 1, per_cell=4)
  with pytest.raises(sweep.SweepError, match="at least 1"):
    sweep.device_slots(four, 1, per_cell=0)


def test_visible_devices_follow_the_environment(monkeypatch):
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5")
  assert sweep.visible_devices("gpu") == ["2", "5"]
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
  monkeypatch.setattr(sweep.subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(OSError()))
  assert sweep.visible_devices("gpu") == []  # no nvidia-smi: no GPU
  assert sweep.visible_devices("cpu") == []


def test_the_sweep_hands_each_cell_its_device_environment(tmp_path, flagfile):
  cells = sweep.plan_cells(["assft", "rand"], [0], tmp_path)
  launcher = FakeLauncher(ticks=2)
  envs = sweep.device_slots(["0", "1"], 2)
  res = sweep.run_sweep(cells, [flagfile], launch=launcher, log=_quiet, jobs=2, envs=envs, poll_s=0)
  assert res.exit_code == 0
  assert sorted(e["CUDA_VISIBLE_DEVICES"] for e in launcher.envs) == ["0", "1"]
  assert all(cpus is None for _, _, cpus, _ in launcher.calls)  # devices, not CPU pinning


def test_plan_groups_share_a_round_structure_and_put_the_leaders_first(tmp_path):
  cells = sweep.plan_cells(
    ["random", "entropy", "assft", "random+ssft", "lower_bound"], [0, 1, 2], tmp_path
  )
  groups = sweep.plan_groups(cells, 2)
  names = [[c.name for c in g] for g in groups]
  assert names == [
    ["random/seed_0", "random/seed_1"],  # the seeds' leaders (random is every seed's first)
    ["random/seed_2", "entropy/seed_0"],
    ["entropy/seed_1", "entropy/seed_2"],
    ["assft/seed_0", "assft/seed_1"],  # SSFT arms together, whatever their strategy
    ["assft/seed_2", "random+ssft/seed_0"],
    ["random+ssft/seed_1", "random+ssft/seed_2"],
    ["lower_bound/seed_0", "lower_bound/seed_1"],
    ["lower_bound/seed_2"],
  ]
  assert sweep.plan_groups(cells, 1) == [[c] for c in cells]
  assert sweep.parse_cell_spec(sweep.cell_spec(cells[7])) == cells[7]
  with pytest.raises(sweep.SweepError, match="TOKEN:SEED:WORKDIR"):
    sweep.parse_cell_spec("random:x:/tmp")


def test_the_sweep_runs_groups_and_books_each_cell(tmp_path, flagfile):
  """Two programs of two runs each; a group process that ends with one run incomplete
  books that cell as failed and the other as done."""
  cells = sweep.plan_cells(["rand", "dkd"], [0, 1], tmp_path)
  started = []

  class Group:
    def __init__(self, cmd):
      self.cmd, self.left = cmd, 2
      started.append(cmd)

    def poll(self):
      self.left -= 1
      if self.left:
        return None
      wds = [Path(a.split(":", 2)[2]) for a in self.cmd if a.startswith("--cell=")]
      for wd in wds:
        if wd.parent.name != "dkd" or wd.name != "seed_1":  # that run fails in the group
          _summary(wd, True, rounds=[0])
        else:
          _summary(wd, False, rounds=[0])
      return 1 if any(wd.parent.name == "dkd" and wd.name == "seed_1" for wd in wds) else 0

    def terminate(self):
      pass

    def wait(self):
      return 0

  res = sweep.run_sweep(
    cells,
    [flagfile],
    launch=lambda cmd, log, cpus, env: Group(cmd),
    log=_quiet,
    runs_per_program=2,
    poll_s=0,
  )
  assert [c[c.index("-m") + 1] for c in started] == ["experiments.group"] * 2
  assert [[a for a in c if a.startswith("--cell=")] for c in started][0] == [
    f"--cell=rand:0:{tmp_path / 'rand' / 'seed_0'}",
    f"--cell=rand:1:{tmp_path / 'rand' / 'seed_1'}",
  ]
  assert [c.name for c, _ in res.failed] == ["dkd/seed_1"] and res.exit_code == 1
  assert sorted(c.name for c in res.ran) == sorted(c.name for c in cells)
