"""The smoke flagfile as a RunConfig, and how two runs' results are compared."""

from __future__ import annotations

from pathlib import Path

from assft_jax import config as config_lib
from assft_jax import flags as run_flags
from tests._run_helpers import SMOKE


def smoke_cfg(workdir: Path, cache: Path, *extra: str) -> config_lib.RunConfig:
  return run_flags.parse(
    [f"--flagfile={SMOKE}", f"--workdir={workdir}", f"--cache_dir={cache}", *extra]
  )


def same_results(a: dict, b: dict, tol: float = 1e-4) -> None:
  """Two summaries hold the same rounds: queried and pseudo ids equal, Dice within tol."""
  assert [r["round"] for r in a["rounds"]] == [r["round"] for r in b["rounds"]]
  for ra, rb in zip(a["rounds"], b["rounds"]):
    assert ra["queried"] == rb["queried"], ra["round"]
    assert ra["pseudo"] == rb["pseudo"], ra["round"]
    assert abs(ra["dice_mean"] - rb["dice_mean"]) <= tol, ra["round"]
