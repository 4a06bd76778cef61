"""The repository paths and the run command shared by the end-to-end tests."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "flags" / "smoke.flags"


def run_cmd(wd: Path, cache: Path, *argv: str) -> list[str]:
  """`python -m experiments.run` on the smoke flagfile, with `argv` after it."""
  return [
    sys.executable,
    "-m",
    "experiments.run",
    f"--flagfile={SMOKE}",
    f"--workdir={wd}",
    f"--cache_dir={cache}",
    *argv,
  ]
