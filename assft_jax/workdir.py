"""The workdir: the one place a run writes, and everything needed to resume it.

Layout:
  config.json               resolved RunConfig (a rerun with another config is refused)
  split.json                the held-out test split and the target pool
  round_XXX/query.json      queried ids and the scores that drove the choice
  round_XXX/to_annotate.csv manifest oracle only (with the pre-annotations and the color
                            table here too when there is no --annotation_dir)
  round_XXX/model/          the round's network (models.save_pretrained format)
  round_XXX/model_files.json size and sha256 of each file of model/ (checked on resume)
  round_XXX/pool.json       the pool after the round
  round_XXX/query_slices.npz central slices of the queried cases (for the report)
  round_XXX/scores.npz      the scoring pass of the round's model over the whole target
                            pool: the next round's query ranks these, and its Dice per
                            case gives the report's pool protocols
  round_XXX/ssft.json       with SSFT: N_SU, K, the pseudo-labelled ids, unlabeled_dice
  round_XXX/row.json        the round's summary row (a resume rebuilds summary.json from it)
  round_XXX/train_<stage>.jsonl per-epoch training records
  round_XXX/diverged_<stage>/ the last good training state, only after a NaN stop
  round_XXX/DONE            written last: the round is complete
  summary.json              rewritten atomically after every round
  .lock                     held (flock) by the run using the workdir; its pid and host inside
  discarded/<time>/         what --resume_from=ROUND moved aside (later rounds, summary.json,
                            the old config.json when a flag changed) and resume.json (why)

Every write goes through `assft_jax.atomic` (temp file, then rename). One run at a time:
`lock.locked` refuses a second one at once, naming the holder. A rerun reads the last
complete round back whole (`resume_state`); a damaged file there is an error naming it,
which offers --resume_from=<the last intact round>, never a silent restart from zero.

Round 0 is shared across runs: every arm of one seed trains the same r = 0 (same split,
init pick, epochs and seed streams), so the first run to finish it stores it in the cache
(`CACHE/round0/<round0_key>/`: round_000/ and split.json) and later runs copy it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from assft_jax import atomic, models
from assft_jax import config as config_lib
from assft_jax.errors import AssftError
from assft_jax.lock import LOCK
from assft_jax.pool import Pool

log = logging.getLogger("assft_jax.workdir")

RESUME_MAY_CHANGE = ("train.lr", "train.clip_norm", "train.weight_decay", "train.precision")
"""Flags a rerun may change together with --resume_from=ROUND: the cures of a diverged
training run. They change how later rounds train, not what rounds 0..ROUND hold."""


class WorkdirError(AssftError, ValueError):
  """The workdir cannot be used as asked (for example it holds another config)."""


def round_dir(workdir: Path, r: int) -> Path:
  return Path(workdir) / f"round_{r:03d}"


def open_workdir(
  cfg: config_lib.RunConfig,
  overwrite: bool = False,
  resume_from: int | None = None,
  allow_kernel_switch: bool = False,
) -> Path:
  """Creates the workdir, or checks that it holds this very config (resume).

  Call it under `lock.locked`, with a resolved config (`components.resolve`). Removes the
  temp files of killed writers. resume_from: keep rounds 0..resume_from and move the
  later ones aside (`discard_after`); the flags of RESUME_MAY_CHANGE may then differ from
  config.json. A conv kernel other than config.json's is refused unless
  `allow_kernel_switch` (each round's row names the kernel that made it).
  """
  wd = Path(cfg.workdir)
  cfg_path = wd / "config.json"
  new = cfg.to_json()
  if overwrite and wd.exists():
    # Only the run's own files go; a cache_dir outside the workdir is left alone.
    for child in wd.iterdir():
      if child.name == LOCK:
        continue
      if child.is_dir():
        shutil.rmtree(child)
      else:
        child.unlink()
  changes: list[str] = []
  if cfg_path.exists():
    old = read_json(cfg_path)
    flat_old, flat_new = config_lib.flatten(old), config_lib.flatten(new)
    _check_kernel(cfg_path, flat_old.get(KERNEL), flat_new[KERNEL], allow_kernel_switch)
    old = {**old, "model": {**old.get("model", {}), "conv_impl": flat_new[KERNEL]}}
    changes = config_lib.config_diff(old, new)
    kept = {**config_lib.flatten(old), **{k: flat_new[k] for k in RESUME_MAY_CHANGE}}
    curable = not config_lib.config_diff(kept, new)
    if changes and not (curable and resume_from is not None):
      hint = (
        f" Only {', '.join('--' + k.split('.')[1] for k in RESUME_MAY_CHANGE)} may change, "
        "and only with --resume_from=ROUND (continue after round ROUND with them)."
        if curable
        else ""
      )
      raise WorkdirError(
        f"--workdir={wd} holds a run with another config; flags that differ: "
        + "; ".join(changes)
        + f".{hint} Use another --workdir, or --overwrite to start afresh."
      )
  wd.mkdir(parents=True, exist_ok=True)
  for folder in [wd, *sorted(wd.glob("round_*"))]:
    for p in atomic.clean_stale(folder):
      log.info("removed %s (left by a killed run)", p)
  if resume_from is not None:
    discard_after(wd, resume_from, config_changes=changes)
  atomic.write_json(cfg_path, new)
  return wd


KERNEL = "model.conv_impl"


def _check_kernel(cfg_path: Path, old: str | None, new: str, allow: bool) -> None:
  """WorkdirError when the run in cfg_path was made with another conv kernel than `new`,
  unless `allow`: two kernels sum the same products in another order, and over hundreds
  of optimiser steps float32 rounding moves a run's Dice by up to several points, so a
  run whose rounds mix kernels is not the run its config describes."""
  if old == new:
    return
  if allow:
    log.warning("%s: conv kernel %s -> %s (--allow_kernel_switch)", cfg_path, old, new)
    return
  switch = (
    f"add --allow_kernel_switch to continue with {new!r} on purpose (each round's row "
    "records its kernel)"
  )
  if old in (None, "auto"):
    raise WorkdirError(
      f"{cfg_path}: the run was made before runs recorded their conv kernel, and this "
      f"process runs {new!r}: {switch}, or --overwrite to start afresh."
    )
  raise WorkdirError(
    f"{cfg_path}: the run's rounds were made with the conv kernel {old!r}, and this process "
    f"runs {new!r}. Resuming would mix kernels, whose float32 sums differ enough to move "
    f"the results. Resume where {old!r} runs (--conv_impl={old}), use another --workdir, "
    f"or {switch}."
  )


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
  """The JSON in `path`, `default` when there is none; WorkdirError naming a damaged file."""
  path = Path(path)
  if not path.exists():
    return default
  try:
    return json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise WorkdirError(f"{path}: damaged, not valid JSON ({e})") from None


@dataclasses.dataclass(frozen=True)
class RoundState:
  """A complete round read back whole: where a rerun continues from."""

  round: int
  pool: Pool  # round_XXX/pool.json
  variables: Any  # round_XXX/model/
  rows: list[dict]  # row.json of rounds 0..round (the summary's rows)


class _Damaged(Exception):
  """One file of a round's state that does not read back (path, what is wrong)."""


def read_round(workdir: Path, r: int) -> RoundState:
  """Round r's pool, network and the summary rows of rounds 0..r; _Damaged naming the
  first file that does not read back."""

  def json_of(path: Path) -> Any:
    if not path.is_file():
      raise _Damaged(f"{path}: missing")
    try:
      return read_json(path)
    except WorkdirError as e:
      raise _Damaged(str(e)) from None

  rd = round_dir(workdir, r)
  try:
    pool = Pool.from_json(json_of(rd / "pool.json"))
  except (KeyError, TypeError, AttributeError, ValueError) as e:
    raise _Damaged(f"{rd / 'pool.json'}: damaged, not a pool ({type(e).__name__}: {e})") from None
  rows = [json_of(round_dir(workdir, i) / "row.json") for i in range(r + 1)]
  if (rd / "model_files.json").is_file():
    # Checked first: orbax on a damaged file fails from its reader threads, which print
    # stray tracebacks besides the error it raises.
    _check_sums(model_dir(workdir, r), json_of(rd / "model_files.json"))
  try:
    variables = load_model(workdir, r)
  except models.CheckpointError as e:
    raise _Damaged(f"{model_dir(workdir, r)}: damaged or truncated network ({e})") from None
  return RoundState(r, pool, variables, rows)


def _check_sums(folder: Path, want: dict[str, list]) -> None:
  got = _file_sums(folder) if folder.is_dir() else {}
  for name, (size, digest) in want.items():
    path = folder / name
    if name not in got:
      raise _Damaged(f"{path}: missing from the saved network")
    if got[name][0] != size:
      raise _Damaged(f"{path}: {got[name][0]} bytes, saved with {size} (truncated?)")
    if got[name][1] != digest:
      raise _Damaged(f"{path}: its content changed since it was saved (sha256 differs)")


def resume_state(workdir: Path) -> RoundState | None:
  """The last complete round, read back whole; None when no round is complete.

  A damaged file (of that round, or summary.json) is a WorkdirError that names it and
  offers --resume_from=<the last round that reads back>; nothing is changed.
  """
  wd = Path(workdir)
  done = last_done_round(wd)
  later = sorted(p.parent.name for p in wd.glob("round_*/DONE"))[0 if done is None else done + 1 :]
  if later:  # a lost marker: continuing would silently redo complete rounds
    lost = round_dir(wd, 0 if done is None else done + 1) / "DONE"
    raise WorkdirError(
      f"{lost}: missing, while later rounds are complete ({', '.join(later)}). "
      + _resume_hint(wd, done)
    )
  if done is None:
    return None
  try:
    read_json(wd / "summary.json")
  except WorkdirError as e:
    raise WorkdirError(f"{e}. {_resume_hint(wd, done)}") from None
  try:
    return read_round(wd, done)
  except _Damaged as e:
    good = next((r for r in range(done - 1, -1, -1) if _reads_back(wd, r)), None)
    raise WorkdirError(
      f"{e}. Round {done}, the last complete round, does not read back. " + _resume_hint(wd, good)
    ) from None


def _reads_back(workdir: Path, r: int) -> bool:
  try:
    return read_round(workdir, r) is not None
  except _Damaged:
    return False


def _resume_hint(workdir: Path, good: int | None) -> str:
  if good is None:
    return "No earlier round reads back: restore the file, or --overwrite to start afresh."
  return (
    f"Rerun with --resume_from={good} to continue after round {good} (what follows it "
    f"is moved to {Path(workdir) / 'discarded'}/), or --overwrite to start afresh."
  )


def discard_after(workdir: Path, r: int, config_changes: list[str] = ()) -> Path | None:
  """--resume_from=r: moves summary.json, every round after r (complete or not) and, when
  flags changed, the old config.json into WORKDIR/discarded/<time>/, with resume.json
  saying why; round r must read back. Returns that folder (None: nothing to move).

  The highest round goes first, so a kill part-way leaves the workdir a complete
  prefix of rounds, and the same command finishes the job.
  """
  wd = Path(workdir)
  done = last_done_round(wd)
  if r < 0 or done is None or r > done:
    last = "none" if done is None else str(done)
    raise WorkdirError(
      f"--resume_from={r}: round {r} is not complete in {wd} (last complete round: {last})"
    )
  try:
    read_round(wd, r)
  except _Damaged as e:
    raise WorkdirError(f"--resume_from={r}: {e}") from None
  later = sorted((p for p in wd.glob("round_*") if int(p.name[6:]) > r), reverse=True)
  moved = [p for p in [wd / "summary.json", *later] if p.exists()]
  if not moved and not config_changes:
    return None
  out = wd / "discarded" / time.strftime("%Y%m%d-%H%M%S")
  while out.exists():  # two restarts in one second
    out = out.with_name(out.name + "_")
  why = {"resume_from": r, "moved": [p.name for p in moved], "config_changes": config_changes}
  atomic.write_json(out / "resume.json", why)
  if config_changes:
    shutil.copy2(wd / "config.json", out / "config.json")
  for p in moved:
    os.rename(p, out / p.name)
  log.warning("--resume_from=%d: moved %s to %s", r, ", ".join(why["moved"]) or "nothing", out)
  return out


def model_dir(workdir: Path, r: int) -> Path:
  """Where round r's network is (`models.load_pretrained` reads it)."""
  return round_dir(workdir, r) / "model"


def save_model(workdir: Path, r: int, module, variables) -> None:
  """The round's network, in the one checkpoint format (`models.save_pretrained`), and
  the size and sha256 of each of its files (round_XXX/model_files.json): a rerun checks
  them before orbax reads the folder, so a truncated or altered file is named exactly."""
  d = model_dir(workdir, r)
  models.save_pretrained(d, models.model_config(module), jax.device_get(variables))
  if jax.process_index() == 0:  # the process that wrote the network (save_pretrained)
    atomic.write_json(round_dir(workdir, r) / "model_files.json", _file_sums(d))


def _file_sums(folder: Path) -> dict[str, list]:
  """{path relative to folder: [size, sha256 hex]} of every file under it."""
  return {
    str(p.relative_to(folder)): [p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest()]
    for p in sorted(folder.rglob("*"))
    if p.is_file()
  }


def load_model(workdir: Path, r: int):
  """Variables of the network saved by `save_model` for round r."""
  _, variables = models.load_pretrained(model_dir(workdir, r))
  return variables


SCORES = "scores.npz"


def write_scores(path: Path, stats: dict) -> None:
  """A scoring pass's stats (`engine.score_pass`: "ids" and arrays aligned on them),
  uncompressed: the next round's query reads back exactly what the pass computed."""
  arrays = {k: np.asarray(v) for k, v in stats.items() if k != "ids"}
  atomic.write_npz(path, {"ids": np.asarray(list(stats["ids"]), str), **arrays}, compressed=False)


def read_scores(path: Path) -> dict | None:
  """The stats `write_scores` wrote, or None when there is no such file (a round made
  before rounds kept their pass: the next round then scores again)."""
  if not Path(path).is_file():
    return None
  try:
    with np.load(path) as z:
      out = {k: z[k] for k in z.files}
  except (OSError, ValueError) as e:
    raise WorkdirError(f"{path}: damaged, not readable scores ({e})") from None
  out["ids"] = [str(c) for c in out["ids"]]
  return out


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
# the key sees the config (the resolved conv kernel included) and the inputs, not the code.
ROUND0_VERSION = 3


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
