"""The workdir: the one place a run writes, and everything needed to resume it.

Layout:
  config.json               resolved RunConfig (a rerun with another config is refused)
  split.json                the held-out test split and the target pool
  round_XXX/query.json      queried ids and the scores that drove the choice
  round_XXX/to_annotate.csv manifest oracle only
  round_XXX/model/          the round's network (models.save_pretrained format)
  round_XXX/pool.json       the pool after the round
  round_XXX/query_slices.npz central slices of the queried cases (for the report)
  round_XXX/DONE            written last: the round is complete
  summary.json              rewritten atomically after every round
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from assft_jax import config as config_lib
from assft_jax.errors import AssftError


class WorkdirError(AssftError, ValueError):
  """The workdir cannot be used as asked (for example it holds another config)."""


def round_dir(workdir: Path, r: int) -> Path:
  return Path(workdir) / f"round_{r:03d}"


def open_workdir(cfg: config_lib.RunConfig, overwrite: bool = False) -> Path:
  """Creates the workdir, or checks that it holds this very config (resume)."""
  wd = Path(cfg.workdir)
  cfg_path = wd / "config.json"
  new = cfg.to_json()
  if overwrite and wd.exists():
    # Only the run's own files go; a cache_dir outside the workdir is left alone.
    for child in wd.iterdir():
      if child.is_dir():
        shutil.rmtree(child)
      else:
        child.unlink()
  if cfg_path.exists():
    old = json.loads(cfg_path.read_text())
    diff = config_lib.config_diff(old, new)
    if diff:
      raise WorkdirError(
        f"--workdir={wd} holds a run with another config; flags that differ: "
        + "; ".join(diff)
        + ". Use another --workdir, or --overwrite to start afresh."
      )
  wd.mkdir(parents=True, exist_ok=True)
  config_lib.write_json_atomic(cfg_path, new)
  return wd


def last_done_round(workdir: Path) -> int | None:
  """The highest round whose DONE marker exists (rounds complete in order)."""
  done = sorted(int(p.parent.name.split("_")[1]) for p in Path(workdir).glob("round_*/DONE"))
  r = None
  for i, d in enumerate(done):
    if d != i:
      break
    r = d
  return r


def mark_done(workdir: Path, r: int) -> None:
  path = round_dir(workdir, r) / "DONE"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("ok\n")


def read_json(path: Path, default: Any = None) -> Any:
  path = Path(path)
  return json.loads(path.read_text()) if path.exists() else default
