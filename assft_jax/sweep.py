"""Sweeps: every (strategy, seed) cell is its own resumable `experiments.run` run.

A cell's workdir is `OUT/<token>/seed_<k>/`. The sweep sets `--ssft` and `--stage3` per
cell, as the paper's tables do: SSFT on for `assft`, off for every other strategy
unless the token is `<strategy>+ssft` (e.g. `random+ssft`); `<strategy>+sup` is the
compute-matched control (`--nossft --stage3=supervised`: a second supervised stage of
the same length instead of SSFT). The names `lower_bound` and `upper_bound` make cells of
the bound runs (`--lower_bound` / `--upper_bound`). A cell whose summary.json says
`"complete": true` is skipped; any other cell is (re)started with the same command,
which resumes it.

With `jobs` > 1, that many cells run at once, each pinned to its own share of the CPUs
(`cpu_slots`: XLA sizes its thread pools from the process's affinity mask) and logging
to `<cell workdir>/run.log`. Cells go seed-major, and every AL cell of a seed waits until
the seed's first AL cell (its leader) has finished round 0 or ended, so the later arms
copy round 0 from the cache instead of training it again (`workdir.py`). The launcher
is injectable so the planning and bookkeeping are testable without subprocesses.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

# No jax here (nor through imports): the parent stays single-threaded, which keeps
# `preexec_fn` (the CPU pinning of a child) safe.
from assft_jax.config import BOUNDS
from assft_jax.errors import EXIT_ERROR, EXIT_OK, EXIT_PENDING, AssftError

# Token suffix -> (ssft, stage3) of the run.
SUFFIXES = {"+ssft": (True, "auto"), "+sup": (False, "supervised")}


class SweepError(AssftError, ValueError):
  """Bad sweep arguments; the message names the flag and what is wrong."""


@dataclasses.dataclass(frozen=True)
class Cell:
  """token: the --strategies entry (also the directory name); strategy, ssft, stage3:
  the run's flags."""

  token: str
  strategy: str
  ssft: bool
  stage3: str
  seed: int
  workdir: Path

  @property
  def name(self) -> str:
    return f"{self.token}/seed_{self.seed}"

  @property
  def is_bound(self) -> bool:
    return self.strategy in BOUNDS


def parse_token(token: str) -> tuple[str, bool, str]:
  """-> (strategy, ssft, stage3): "assft" -> ("assft", True, "auto"); "random+ssft" ->
  ("random", True, "auto"); "random+sup" -> ("random", False, "supervised"); "x" ->
  ("x", False, "auto")."""
  if token in BOUNDS:
    return token, False, "auto"
  for suffix, (ssft, stage3) in SUFFIXES.items():
    if token.lower().endswith(suffix):
      return token[: -len(suffix)], ssft, stage3
  return token, token.lower() == "assft", "auto"


@dataclasses.dataclass
class SweepResult:
  ran: list[Cell] = dataclasses.field(default_factory=list)
  skipped: list[Cell] = dataclasses.field(default_factory=list)
  waiting: list[Cell] = dataclasses.field(default_factory=list)
  failed: list[tuple[Cell, int]] = dataclasses.field(default_factory=list)

  @property
  def exit_code(self) -> int:
    """1 if any cell failed, else 3 if any waits for labels, else 0."""
    if self.failed:
      return EXIT_ERROR
    return EXIT_PENDING if self.waiting else EXIT_OK

  def describe(self) -> str:
    lines = [
      f"sweep: {len(self.ran)} ran, {len(self.skipped)} skipped (complete), "
      f"{len(self.waiting)} waiting for labels, {len(self.failed)} failed"
    ]
    lines += [f"  waiting for labels: {c.name} ({c.workdir})" for c in self.waiting]
    lines += [f"  FAILED (exit {rc}): {c.name} ({c.workdir})" for c, rc in self.failed]
    return "\n".join(lines)


def split_flagfiles(argv: list[str]) -> tuple[list[str], list[str]]:
  """(the --flagfile values, argv without them): a run's flagfile is passed on to the
  runs, so absl must not expand it in the process that launches them."""
  flagfiles, rest, i = [], [argv[0]], 1
  while i < len(argv):
    a = argv[i]
    if a.startswith(("--flagfile=", "-flagfile=")):
      flagfiles.append(a.split("=", 1)[1])
    elif a in ("--flagfile", "-flagfile") and i + 1 < len(argv):
      flagfiles.append(argv[i + 1])
      i += 1
    else:
      rest.append(a)
    i += 1
  return flagfiles, rest


def parse_strategies(text: str) -> list[str]:
  """ "a,b,a" -> ["a", "b"]; names must be usable as directory names, with at most one
  of the suffixes "+ssft" / "+sup", and none on a bound."""
  names = list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
  if not names:
    raise SweepError("--strategies: empty; give a comma-separated list, e.g. assft,rand")
  bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9_.+-]+", n) or not n.strip(".")]
  if bad:
    raise SweepError(f"--strategies: invalid names {bad} (letters, digits, _ . + - only)")
  mixed = [n for n in names if _two_suffixes_or_bound(n)]
  if mixed:
    raise SweepError(
      f"--strategies: {mixed}: one suffix per name (+ssft: with SSFT, +sup: the "
      "compute-matched control), and none on lower_bound / upper_bound"
    )
  return names


def _two_suffixes_or_bound(name: str) -> bool:
  base = parse_token(name)[0]
  return "+" in base or (base in BOUNDS and name not in BOUNDS)


def parse_seeds(text: str) -> list[int]:
  """ "0,1,2" -> [0, 1, 2]; "0-4" ranges are allowed."""
  seeds: list[int] = []
  for part in (p.strip() for p in text.split(",") if p.strip()):
    m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
    if m is None:
      raise SweepError(f"--seeds: {part!r} is not a non-negative integer or range a-b")
    lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
    if hi < lo:
      raise SweepError(f"--seeds: empty range {part!r}")
    seeds += [k for k in range(lo, hi + 1) if k not in seeds]
  if not seeds:
    raise SweepError("--seeds: empty; give e.g. 0,1,2")
  return seeds


def plan_cells(
  strategies: Sequence[str], seeds: Sequence[int], out: str | os.PathLike
) -> list[Cell]:
  """Seed-major order: one seed's arms run close together, so its round 0 (trained once,
  then copied from the cache) is ready when they need it."""
  out = Path(out)
  return [Cell(t, *parse_token(t), k, out / t / f"seed_{k}") for k in seeds for t in strategies]


def _summary(workdir: Path) -> dict:
  try:
    s = json.loads((Path(workdir) / "summary.json").read_text())
  except (OSError, ValueError):
    return {}
  return s if isinstance(s, dict) else {}


def is_complete(workdir: Path) -> bool:
  """True iff workdir/summary.json is readable and says "complete": true."""
  return _summary(workdir).get("complete") is True


def has_round_zero(workdir: Path) -> bool:
  """True once workdir/summary.json holds a row for round 0."""
  rows = _summary(workdir).get("rounds")
  return isinstance(rows, list) and any(isinstance(x, dict) and x.get("round") == 0 for x in rows)


# Set per cell; never passed through.
CELL_FLAGS = ("strategy", "seed", "workdir", "ssft", "stage3") + BOUNDS


def check_extra(extra: Sequence[str]) -> None:
  """Pass-through flags may not set what the sweep sets per cell."""
  bad = [a for a in extra if re.fullmatch(rf"--?(no)?({'|'.join(CELL_FLAGS)})(=.*)?", a)]
  if bad:
    raise SweepError(
      f"{' '.join(bad)}: set per cell by the sweep (use --strategies, --seeds, "
      "--out; name a strategy <name>+ssft to run it with SSFT, <name>+sup for the "
      "compute-matched control)"
    )


def cell_flags(cell: Cell) -> list[str]:
  """The run flags that make `experiments.run` this cell."""
  what = (
    [f"--{cell.strategy}"]
    if cell.is_bound
    else [
      f"--strategy={cell.strategy}",
      "--ssft" if cell.ssft else "--nossft",
      f"--stage3={cell.stage3}",
    ]
  )
  return [*what, f"--seed={cell.seed}", f"--workdir={cell.workdir}"]


def run_command(
  cell: Cell, flagfiles: Sequence[str], extra: Sequence[str] = (), python: str = sys.executable
) -> list[str]:
  """The cell's `experiments.run` command; `extra` comes last so it overrides."""
  return (
    [python, "-m", "experiments.run"]
    + [f"--flagfile={f}" for f in flagfiles]
    + cell_flags(cell)
    + list(extra)
  )


def cell_spec(cell: Cell) -> str:
  """TOKEN:SEED:WORKDIR, how `experiments.group` names a cell (`parse_cell_spec`)."""
  return f"{cell.token}:{cell.seed}:{cell.workdir}"


def parse_cell_spec(text: str) -> Cell:
  token, sep, rest = text.partition(":")
  seed, sep2, workdir = rest.partition(":")
  if not (sep and sep2 and token and workdir and seed.isdigit()):
    raise SweepError(f"--cell={text!r}: expected TOKEN:SEED:WORKDIR, e.g. random:0:runs/x")
  (name,) = parse_strategies(token)
  return Cell(name, *parse_token(name), int(seed), Path(workdir))


def group_command(
  cells: Sequence[Cell],
  flagfiles: Sequence[str],
  extra: Sequence[str] = (),
  python: str = sys.executable,
) -> list[str]:
  """One `experiments.group` process for `cells`: their runs, training as one program."""
  return (
    [python, "-m", "experiments.group"]
    + [f"--flagfile={f}" for f in flagfiles]
    + [f"--cell={cell_spec(c)}" for c in cells]
    + list(extra)
  )


def plan_groups(cells: Sequence[Cell], k: int) -> list[list[Cell]]:
  """`cells` in programs of at most k runs that share a round structure (their strategy
  aside: SSFT, stage 3, or the bound they measure), token by token and seed by seed, so
  the first token's group holds the seeds' leaders (each seed's round 0 is trained there
  and copied by the others). k = 1: one cell per program."""
  if k < 1:
    raise SweepError(f"--runs_per_program={k}: must be at least 1")
  if k == 1:
    return [[c] for c in cells]
  order = sorted(cells, key=lambda c: ([x.token for x in cells].index(c.token), c.seed))
  by: dict[tuple, list[Cell]] = {}
  for c in order:
    by.setdefault((c.ssft, c.stage3, c.strategy if c.is_bound else ""), []).append(c)
  groups = [g[i : i + k] for g in by.values() for i in range(0, len(g), k)]
  return sorted(groups, key=lambda g: order.index(g[0]))


def check_plans(
  cells: Sequence[Cell],
  flagfiles: Sequence[str],
  extra: Sequence[str] = (),
  log: Callable[[str], None] = print,
) -> None:
  """The start check of every AL cell's run (`plan.plan_rounds`), before any cell starts:
  a budget the pool cannot give is one error, and the rounds where §3.4's exclusion will
  be lifted are said once per kind of arm. Cells differ here only in --ssft (and the
  strategy, which no count depends on), so one cell of each setting is checked."""
  from assft_jax import flags as run_flags
  from assft_jax import plan

  seen: set[bool] = set()
  for c in cells:
    if c.is_bound or c.ssft in seen:
      continue
    seen.add(c.ssft)
    cmd = run_command(c, flagfiles, extra)
    cfg = run_flags.parse(cmd[cmd.index("experiments.run") + 1 :], machine=False)
    log(
      f"plan ({'with' if c.ssft else 'without'} SSFT): {plan.describe(cfg, plan.pool_size_of(cfg))}"
    )


# ------------------------------------------------------------------ running cells


class Job(Protocol):
  """What the sweep needs of a started cell (`subprocess.Popen` has it)."""

  def poll(self) -> int | None: ...

  def terminate(self) -> None: ...

  def wait(self) -> int: ...


Launcher = Callable[[list[str], Path | None, frozenset[int] | None, dict | None], Job]
"""launch(cmd, log file or None, CPUs to pin to or None, extra environment or None)."""


def cpu_slots(jobs: int, cpus: Sequence[int] | None = None) -> list[frozenset[int] | None]:
  """The CPU set of each of `jobs` parallel slots: the usable CPUs split into equal
  contiguous shares (cores // jobs each; with more jobs than CPUs, one CPU each, shared
  round-robin). One job: None, no pinning."""
  if jobs < 1:
    raise SweepError(f"--jobs={jobs}: must be at least 1")
  if jobs == 1:
    return [None]
  cpus = sorted(os.sched_getaffinity(0) if cpus is None else cpus)
  k = max(1, len(cpus) // jobs)
  return [frozenset(cpus[(i * k + j) % len(cpus)] for j in range(k)) for i in range(jobs)]


def subprocess_launch(
  cmd: list[str], log: Path | None, cpus: frozenset[int] | None, env: dict | None = None
) -> Job:
  """Starts cmd; with `log`, its stdout and stderr go there (appended: a resumed cell
  keeps its earlier attempts' lines), else to the console. With `cpus`, the child is
  pinned to them before it starts (so XLA's pools are as large as its share); `env` is
  added to its environment (the accelerators it may use, `device_slots`)."""
  out = None
  if log is not None:
    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab")  # a stream, not a file that is written once: no atomic write
  pin = functools.partial(os.sched_setaffinity, 0, cpus) if cpus is not None else None
  try:
    return subprocess.Popen(
      cmd,
      stdout=out,
      stderr=subprocess.STDOUT if out else None,
      preexec_fn=pin,
      env=None if not env else {**os.environ, **env},
    )
  finally:
    if out is not None:
      out.close()  # the child holds its own copy


# The variable that names a process's accelerators, by platform.
VISIBLE = {"gpu": "CUDA_VISIBLE_DEVICES", "tpu": "TPU_VISIBLE_CHIPS"}
MEMORY_SHARE = 0.9  # of one device's memory, split between the processes sharing it


def device_slots(
  devices: Sequence[str], jobs: int, per_cell: int = 1, platform: str = "gpu"
) -> list[dict[str, str]]:
  """The environment of each of `jobs` parallel cells on an accelerator host: cell slot i
  gets the i-th group of `per_cell` consecutive devices (round-robin once every group has
  a cell). Processes that share a group neither preallocate device memory nor take more
  than an equal part of MEMORY_SHARE of it (JAX's own default is one process taking 75 %
  at once, which makes a second one fail). A TPU cell of one chip also gets the process
  bounds of a single-chip process.

  devices: the accelerators' ids (`visible_devices`), e.g. ["0", "1", "2", "3"].
  """
  if per_cell < 1:
    raise SweepError(f"--devices_per_cell={per_cell}: must be at least 1 on {platform}")
  if jobs < 1:
    raise SweepError(f"--jobs={jobs}: must be at least 1")
  groups = [list(devices[i : i + per_cell]) for i in range(0, len(devices), per_cell)]
  groups = [g for g in groups if len(g) == per_cell]
  if not groups:
    raise SweepError(
      f"--devices_per_cell={per_cell}: this host has {len(devices)} {platform} device(s)"
    )
  sharers = [sum(1 for i in range(jobs) if i % len(groups) == g) for g in range(len(groups))]
  out = []
  for i in range(jobs):
    g = i % len(groups)
    env = {VISIBLE[platform]: ",".join(groups[g])}
    if platform == "tpu" and per_cell == 1:
      env.update(TPU_CHIPS_PER_PROCESS_BOUNDS="1,1,1", TPU_PROCESS_BOUNDS="1,1,1")
    if sharers[g] > 1:
      share = f"{MEMORY_SHARE / sharers[g]:.2f}"
      env.update(
        XLA_PYTHON_CLIENT_PREALLOCATE="false",
        XLA_CLIENT_MEM_FRACTION=share,
        XLA_PYTHON_CLIENT_MEM_FRACTION=share,  # its name before jax 0.11
      )
    out.append(env)
  return out


def visible_devices(platform: str) -> list[str]:
  """The ids of this host's accelerators, read without jax (the sweep's parent stays
  free of it): GPUs from CUDA_VISIBLE_DEVICES when set, else nvidia-smi; TPU chips from
  TPU_VISIBLE_CHIPS when set, else the /dev/accel* and /dev/vfio/<n> files. [] when none."""
  var = os.environ.get(VISIBLE.get(platform, ""), "").strip()
  if var:
    return [d.strip() for d in var.split(",") if d.strip()]
  if platform == "gpu":
    try:
      proc = subprocess.run(
        ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=30,
      )
    except (OSError, subprocess.SubprocessError):
      return []
    return [x.strip() for x in proc.stdout.splitlines() if x.strip()] if not proc.returncode else []
  if platform == "tpu":
    accel = sorted(Path("/dev").glob("accel*")) or sorted(
      p for p in Path("/dev/vfio").glob("[0-9]*")
    )
    return [str(i) for i in range(len(accel))]
  return []


def _leaders(cells: Sequence[Cell]) -> dict[int, Cell]:
  """The first AL cell of each seed: it trains the seed's round 0."""
  out: dict[int, Cell] = {}
  for c in cells:
    if not c.is_bound:
      out.setdefault(c.seed, c)
  return out


def run_sweep(
  cells: Sequence[Cell],
  flagfiles: Sequence[str],
  extra: Sequence[str] = (),
  launch: Launcher = subprocess_launch,
  log: Callable[[str], None] = print,
  jobs: int = 1,
  cpus: Sequence[int] | None = None,
  poll_s: float = 1.0,
  envs: Sequence[dict[str, str]] | None = None,
  runs_per_program: int = 1,
) -> SweepResult:
  """Runs every incomplete cell, up to `jobs` processes at once; a failing cell never
  stops the others. Ctrl-C terminates the running processes (they resume on the next
  sweep).

  envs: one environment per slot (`device_slots`: the accelerators of each process); then
  the processes are not pinned to CPUs. Without it, each slot is pinned to its CPUs.
  runs_per_program=K > 1: the incomplete cells go K at a time into `experiments.group`
  processes (`plan_groups`), whose runs train as one program; each cell still has its
  own workdir and resumes on its own."""
  for f in flagfiles:
    if not Path(f).is_file():
      raise SweepError(f"--flagfile: {f} does not exist")
  check_extra(extra)
  if envs is not None and len(envs) != jobs:
    raise SweepError(f"{len(envs)} device slots for --jobs={jobs}")
  slots = [None] * jobs if envs is not None else cpu_slots(jobs, cpus)
  res = SweepResult()
  n = len(cells)
  tag = {c: f"[{i}/{n}] {c.name}" for i, c in enumerate(cells, 1)}
  todo: list[Cell] = []
  for c in cells:
    if is_complete(c.workdir):
      log(f"{tag[c]}: complete, skipped")
      res.skipped.append(c)
    else:
      todo.append(c)
  pending = [tuple(g) for g in plan_groups(todo, runs_per_program)]
  leaders = _leaders(cells)
  with_r0: set[Cell] = set()  # leaders seen with round 0 (it stays done)
  running: dict[int, tuple[tuple[Cell, ...], Job]] = {}  # slot -> its process's cells

  def ready(unit: tuple[Cell, ...]) -> bool:
    return all(_ready(c, unit) for c in unit)

  def _ready(c: Cell, unit: tuple[Cell, ...]) -> bool:
    lead = leaders.get(c.seed)
    if c.is_bound or lead is c or lead in unit or lead in with_r0:
      return True
    if any(lead in u for u in pending) or any(lead in u for u, _ in running.values()):
      if not has_round_zero(lead.workdir):
        return False
      with_r0.add(lead)
    return True  # the leader has round 0, or ended without it: no point in waiting

  def finish(unit: tuple[Cell, ...], rc: int) -> None:
    for c in unit:
      res.ran.append(c)
      code = rc
      if len(unit) > 1:  # a group's exit code is its worst run's: ask each run's summary
        code = 0 if is_complete(c.workdir) else rc or 1
      if code == EXIT_PENDING:
        log(f"{tag[c]}: waiting for labels (see {c.workdir})")
        res.waiting.append(c)
      elif code != 0:
        log(
          f"{tag[c]}: FAILED with exit code {code}"
          + (f" (log: {_log_of(unit)})" if jobs > 1 or len(unit) > 1 else "")
        )
        res.failed.append((c, code))
      elif jobs > 1 or len(unit) > 1:
        log(f"{tag[c]}: done")

  try:
    while pending or running:
      changed = False
      for slot in [i for i in range(jobs) if i not in running]:
        unit = next((u for u in pending if ready(u)), None)
        if unit is None:
          break
        pending.remove(unit)
        changed = True
        if len(unit) == 1:
          cmd = run_command(unit[0], flagfiles, extra)
        else:
          cmd = group_command(unit, flagfiles, extra)
        logfile = _log_of(unit) if jobs > 1 or len(unit) > 1 else None
        env = envs[slot] if envs is not None else None
        where = ""
        if logfile:
          place = (
            " ".join(f"{k}={v}" for k, v in env.items())
            if env
            else f"cpus {','.join(map(str, sorted(slots[slot])))}"
            if slots[slot] is not None
            else "all cpus"
          )
          where = f" [{place}; log {logfile}]"
        names = ", ".join(tag[c] for c in unit)
        log(f"{names}: {' '.join(cmd)}{where}")
        try:
          running[slot] = (unit, launch(cmd, logfile, slots[slot], env))
        except OSError as e:  # e.g. the interpreter vanished: report, go on
          log(f"{names}: could not start ({e})")
          finish(unit, -1)
      for slot, (unit, job) in list(running.items()):
        rc = job.poll()
        if rc is not None:
          del running[slot]
          changed = True
          finish(unit, rc)
      if not changed:
        time.sleep(poll_s)
  except KeyboardInterrupt:
    log(f"interrupted: stopping {len(running)} running process(es); rerun the sweep to resume")
    for _, job in running.values():
      job.terminate()
    for _, job in running.values():
      job.wait()
    raise
  log(res.describe())
  return res


def _log_of(unit: Sequence[Cell]) -> Path:
  """Where a process's output goes: its cell's run.log, or a group's group.log in the
  first cell's workdir (each run's own lines name it)."""
  return unit[0].workdir / ("run.log" if len(unit) == 1 else "group.log")
