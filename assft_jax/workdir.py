"""The workdir: the one place a run writes, and everything needed to resume it.

Layout:
  config.json               resolved RunConfig (a rerun with another config is refused)
  split.json                the held-out test split and the target pool
  round_XXX/query.json      queried ids and the scores that drove the choice
  round_XXX/to_annotate.csv manifest oracle only (with the pre-annotations and the color
                            table here too when there is no --annotation_dir)
  round_XXX/model/          the round's network (models.save_pretrained format)
  round_XXX/pool.json       the pool after the round
  round_XXX/query_slices.npz central slices of the queried cases (for the report)
  round_XXX/ssft.json       with SSFT: N_SU, K, the pseudo-labelled ids, unlabeled_dice
  round_XXX/row.json        the round's summary row (a resume rebuilds summary.json from it)
  round_XXX/train_<stage>.jsonl per-epoch training records
  round_XXX/diverged_<stage>/ the last good training state, only after a NaN stop
  round_XXX/DONE            written last: the round is complete
  summary.json              rewritten atomically after every round

Every write goes through `assft_jax.atomic` (temp file, then rename).

Round 0 is shared across runs: every arm of one seed trains the same r = 0 (same split,
init pick, epochs and seed streams), so the first run to finish it stores it in the cache
(`CACHE/round0/<round0_key>/`: round_000/ and split.json) and later runs copy it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np

from assft_jax import atomic, models
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
  atomic.write_json(cfg_path, new)
  return wd


def read_config(workdir: Path) -> config_lib.RunConfig:
  """The resolved RunConfig of the run in `workdir` (its config.json).

  WorkdirError, naming the folder, when it holds no run."""
  path = Path(workdir) / "config.json"
  if not path.is_file():
    raise WorkdirError(f"{workdir}: not a run's workdir (no config.json)")
  try:
    return config_lib.RunConfig.from_json(json.loads(path.read_text()))
  except (json.JSONDecodeError, TypeError, AttributeError) as e:
    raise WorkdirError(f"{path}: unreadable run config ({type(e).__name__}: {e})") from None


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
  atomic.write_text(round_dir(workdir, r) / "DONE", "ok\n")


def read_json(path: Path, default: Any = None) -> Any:
  path = Path(path)
  return json.loads(path.read_text()) if path.exists() else default


def model_dir(workdir: Path, r: int) -> Path:
  """Where round r's network is (`models.load_pretrained` reads it)."""
  return round_dir(workdir, r) / "model"


def save_model(workdir: Path, r: int, module, variables) -> None:
  """The round's network, in the one checkpoint format (`models.save_pretrained`)."""
  models.save_pretrained(
    model_dir(workdir, r), models.model_config(module), jax.device_get(variables)
  )


def load_model(workdir: Path, r: int):
  """Variables of the network saved by `save_model` for round r."""
  _, variables = models.load_pretrained(model_dir(workdir, r))
  return variables


def write_query_slices(path: Path, volumes, preds: dict[str, np.ndarray], ids: list[str]) -> None:
  """Central axial slices of the queried cases (image, label if any, prediction), for
  the report's query montage. Axis 0 holds the slices (SPL/LPS-like order).

  volumes: {id: Volume} with image [D, H, W, 1]; preds: {id: [D, H, W] int}.
  """
  arrays = {}
  for cid in ids:
    vol = volumes[cid]
    mid = vol.image.shape[0] // 2
    arrays[f"{cid}/image"] = np.asarray(vol.image[mid, ..., 0], np.float32)
    if vol.label is not None:
      arrays[f"{cid}/label"] = np.asarray(vol.label[mid], np.int16)
    arrays[f"{cid}/pred"] = np.asarray(preds[cid][mid], np.int16)
  atomic.write_npz(path, arrays)


# Settings that cannot change round 0 (it is the init pick and the init stage only): runs
# that differ in these alone share it. Everything else, the seed included, is in the key.
ROUND0_FREE = (
  "workdir",
  "cache_dir",
  "al.strategy",
  "al.ssft",
  "al.stage3",
  "al.rounds",
  "al.budget",
  "al.tau_c",
)
# Bumped when the code of round 0 (init pick, init stage, evaluation) changes its results:
# the key sees the config and the inputs, not the code.
ROUND0_VERSION = 1


def round0_key(cfg: config_lib.RunConfig, *fingerprints: str) -> str:
  """The cache key of a run's round 0: the resolved config without ROUND0_FREE, plus
  `fingerprints` of what the config names but does not hold (F(0)'s weights, the data)."""
  flat = config_lib.flatten(cfg.to_json())
  kept = {k: v for k, v in flat.items() if k not in ROUND0_FREE}
  blob = json.dumps([ROUND0_VERSION, kept, list(fingerprints)], sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:20]


def store_round0(workdir: Path, entry: Path) -> bool:
  """Copies the workdir's finished round 0 and split.json into the cache `entry`.

  First writer wins (two arms of a seed may finish round 0 together); False when the
  entry was already there.
  """
  if (entry / "round_000" / "DONE").exists():
    return False
  with atomic.atomic_dir(entry, replace=False) as tmp:
    shutil.copytree(round_dir(workdir, 0), tmp / "round_000")
    shutil.copy2(Path(workdir) / "split.json", tmp / "split.json")
  return True


def restore_round0(entry: Path, workdir: Path, split: Any) -> bool:
  """Copies a cached round 0 into the workdir, whole (a kill leaves it absent or done).

  Only when the entry holds this very test split (the key should already ensure it);
  False, with nothing written, otherwise. A partial round_000 of an earlier attempt of
  this run is replaced.
  """
  if not (entry / "round_000" / "DONE").exists() or read_json(entry / "split.json") != split:
    return False
  with atomic.atomic_dir(round_dir(workdir, 0)) as tmp:
    shutil.copytree(entry / "round_000", tmp, dirs_exist_ok=True)
  return True
