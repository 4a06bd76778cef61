"""The repository paths and the run command shared by the end-to-end tests."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "flags" / "smoke.flags"


def run_cmd(wd: Path, cache: Path, *argv: str, kill_at: str | None = None) -> list[str]:
  """`python -m experiments.run` on the smoke flagfile, with `argv` after it; with
  `kill_at` ("<phase>:<part of a path>:<n>") through tests/_kill_child.py, which makes
  the run SIGKILL itself at that write point."""
  module = ["experiments.run"] if kill_at is None else ["tests._kill_child", kill_at]
  return [
    sys.executable,
    "-m",
    *module,
    f"--flagfile={SMOKE}",
    f"--workdir={wd}",
    f"--cache_dir={cache}",
    *argv,
  ]
