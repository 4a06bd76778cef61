"""Sweeps: every (strategy, seed) cell is its own resumable `experiments.run` run.

A cell's workdir is `OUT/<strategy>/seed_<k>/`. The sweep sets `--ssft` per cell, as
the paper's tables do: on for `assft`, off for every other strategy unless it is named
`<strategy>+ssft` (e.g. `random+ssft`). The names `lower_bound` and `upper_bound` make
cells of the bound runs (`--lower_bound` / `--upper_bound`). A cell whose summary.json says
`"complete": true` is skipped; any other cell is (re)started with the same command,
which resumes it (issue #6 §4). The command runner is injectable so the planning and
bookkeeping are testable without subprocesses.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from assft_jax.config import BOUNDS
from assft_jax.errors import EXIT_ERROR, EXIT_OK, EXIT_PENDING, AssftError

Runner = Callable[[list[str]], int]


class SweepError(AssftError, ValueError):
  """Bad sweep arguments; the message names the flag and what is wrong."""


@dataclasses.dataclass(frozen=True)
class Cell:
  """token: the --strategies entry (also the directory name); strategy: the run's."""

  token: str
  strategy: str
  ssft: bool
  seed: int
  workdir: Path

  @property
  def name(self) -> str:
    return f"{self.token}/seed_{self.seed}"


def parse_token(token: str) -> tuple[str, bool]:
  """ "assft" -> ("assft", True); "random+ssft" -> ("random", True); "x" -> ("x", False)."""
  if token in BOUNDS:
    return token, False
  if token.lower().endswith("+ssft"):
    return token[: -len("+ssft")], True
  return token, token.lower() == "assft"


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


def parse_strategies(text: str) -> list[str]:
  """ "a,b,a" -> ["a", "b"]; names must be usable as directory names ("+ssft" allowed)."""
  names = list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
  if not names:
    raise SweepError("--strategies: empty; give a comma-separated list, e.g. assft,rand")
  bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9_.+-]+", n) or not n.strip(".")]
  if bad:
    raise SweepError(f"--strategies: invalid names {bad} (letters, digits, _ . + - only)")
  return names


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
  """Strategy-major order, so one strategy's seeds finish together."""
  out = Path(out)
  return [Cell(t, *parse_token(t), k, out / t / f"seed_{k}") for t in strategies for k in seeds]


def is_complete(workdir: Path) -> bool:
  """True iff workdir/summary.json is readable and says "complete": true."""
  try:
    return json.loads((Path(workdir) / "summary.json").read_text()).get("complete") is True
  except (OSError, ValueError, AttributeError):
    return False


CELL_FLAGS = ("strategy", "seed", "workdir", "ssft") + BOUNDS  # set per cell; never passed through


def check_extra(extra: Sequence[str]) -> None:
  """Pass-through flags may not set what the sweep sets per cell."""
  bad = [a for a in extra if re.fullmatch(rf"--?(no)?({'|'.join(CELL_FLAGS)})(=.*)?", a)]
  if bad:
    raise SweepError(
      f"{' '.join(bad)}: set per cell by the sweep (use --strategies, --seeds, "
      "--out; name a strategy <name>+ssft to run it with SSFT)"
    )


def run_command(
  cell: Cell, flagfiles: Sequence[str], extra: Sequence[str] = (), python: str = sys.executable
) -> list[str]:
  """The cell's `experiments.run` command; `extra` comes last so it overrides."""
  what = (
    [f"--{cell.strategy}"]
    if cell.strategy in BOUNDS
    else [f"--strategy={cell.strategy}", "--ssft" if cell.ssft else "--nossft"]
  )
  return (
    [python, "-m", "experiments.run"]
    + [f"--flagfile={f}" for f in flagfiles]
    + what
    + [f"--seed={cell.seed}", f"--workdir={cell.workdir}"]
    + list(extra)
  )


def subprocess_runner(cmd: list[str]) -> int:
  """Runs cmd with inherited stdout/stderr; returns its exit code."""
  return subprocess.run(cmd, check=False).returncode


def run_sweep(
  cells: Sequence[Cell],
  flagfiles: Sequence[str],
  extra: Sequence[str] = (),
  runner: Runner = subprocess_runner,
  log: Callable[[str], None] = print,
) -> SweepResult:
  """Runs every incomplete cell in order; a failing cell never stops the others."""
  for f in flagfiles:
    if not Path(f).is_file():
      raise SweepError(f"--flagfile: {f} does not exist")
  check_extra(extra)
  res = SweepResult()
  for i, cell in enumerate(cells, 1):
    if is_complete(cell.workdir):
      log(f"[{i}/{len(cells)}] {cell.name}: complete, skipped")
      res.skipped.append(cell)
      continue
    cmd = run_command(cell, flagfiles, extra)
    log(f"[{i}/{len(cells)}] {cell.name}: {' '.join(cmd)}")
    try:
      rc = runner(cmd)
    except OSError as e:  # e.g. the interpreter vanished: report, go on
      log(f"[{i}/{len(cells)}] {cell.name}: could not start ({e})")
      rc = -1
    res.ran.append(cell)
    if rc == EXIT_PENDING:
      log(f"[{i}/{len(cells)}] {cell.name}: waiting for labels (see {cell.workdir})")
      res.waiting.append(cell)
    elif rc != 0:
      log(f"[{i}/{len(cells)}] {cell.name}: FAILED with exit code {rc}")
      res.failed.append((cell, rc))
  log(res.describe())
  return res
