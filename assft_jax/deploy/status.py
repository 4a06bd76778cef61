"""`python -m experiments.status WORKDIR`: where a run stands, read from its files only.

The rounds done (DONE markers), the pool of the last one (round_XXX/pool.json: labeled,
pseudo-labelled, excluded from the next query, unlabeled, test), the cases the next round
waits for (its to_annotate.csv, with each expected label file and whether it is there)
and the last Dice (summary.json). Nothing is loaded but JSON and CSV.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from assft_jax import oracle as oracle_lib
from assft_jax import workdir as wd_lib
from assft_jax.pool import Pool


@dataclasses.dataclass(frozen=True)
class Waiting:
  """A queried case of the pending round: where its label is expected, whether it is
  there, and the pre-annotation to start from ("" in round 0)."""

  case_id: str
  label: Path
  present: bool
  preannotation: str


@dataclasses.dataclass(frozen=True)
class RunStatus:
  workdir: Path
  name: str  # the strategy, or the bound the run measures
  rounds: int  # rounds planned after round 0 (0 for a bound run)
  done: int | None  # the last DONE round
  complete: bool
  counts: dict[str, int] | None  # pool sizes after `done`; None without a pool.json
  pending_round: int | None  # a round whose manifest waits for annotators
  manifest: Path | None
  waiting: tuple[Waiting, ...]
  dice: float | None  # mean test Dice of the last round in summary.json
  dice_round: int | None


def read_status(workdir: str | Path) -> RunStatus:
  """The RunStatus of `workdir` (WorkdirError when it holds no run)."""
  wd = Path(workdir)
  cfg = wd_lib.read_config(wd)
  done = wd_lib.last_done_round(wd)
  counts = None
  if done is not None and (wd_lib.round_dir(wd, done) / "pool.json").is_file():
    pool = Pool.from_json(wd_lib.read_json(wd_lib.round_dir(wd, done) / "pool.json"))
    counts = {
      "labeled": len(pool.labeled),
      "pseudo": len(pool.pseudo),
      "excluded": len(pool.excluded),
      "unlabeled": len(pool.unlabeled),
      "test": len(pool.test),
    }
  nxt = 0 if done is None else done + 1
  manifest = wd_lib.round_dir(wd, nxt) / "to_annotate.csv"
  waiting: tuple[Waiting, ...] = ()
  if manifest.is_file():
    waiting = tuple(
      Waiting(
        row["case_id"],
        Path(row["label"]),
        Path(row["label"]).is_file(),
        row.get("preannotation") or "",
      )
      for row in oracle_lib.read_manifest(manifest)
    )
  summary = wd_lib.read_json(wd / "summary.json") or {}
  rows = [x for x in summary.get("rounds", []) if x.get("dice_mean") is not None]
  bound = cfg.al.mode != "al"
  return RunStatus(
    workdir=wd,
    name=cfg.strategy_name,
    rounds=0 if bound else cfg.al.rounds,
    done=done,
    complete=bool(summary.get("complete")),
    counts=counts,
    pending_round=nxt if manifest.is_file() else None,
    manifest=manifest if manifest.is_file() else None,
    waiting=waiting,
    dice=rows[-1]["dice_mean"] if rows else None,
    dice_round=rows[-1]["round"] if rows else None,
  )


def format_status(st: RunStatus) -> str:
  """The report `experiments.status` prints."""
  planned = f" of 0..{st.rounds}" if st.rounds else ""
  done = "none" if st.done is None else f"0..{st.done}"
  lines = [
    f"run {st.workdir} ({st.name}): rounds done {done}{planned}"
    + (", complete" if st.complete else "")
  ]
  if st.counts is not None:
    lines.append("pool: " + ", ".join(f"{k} {v}" for k, v in st.counts.items()))
  if st.dice is not None:
    lines.append(f"last Dice: {st.dice:.4f} (round {st.dice_round}, test split)")
  else:
    lines.append("last Dice: none yet (no finished round scored on a labeled test case)")
  if st.pending_round is not None:
    missing = [w for w in st.waiting if not w.present]
    lines.append(
      f"round {st.pending_round} waits for annotators: {len(missing)} of "
      f"{len(st.waiting)} label file(s) missing (list: {st.manifest})"
    )
    for w in st.waiting:
      state = "present" if w.present else "MISSING"
      pre = f"  start from {w.preannotation}" if w.preannotation else ""
      lines.append(f"  {w.case_id}: {state} {w.label}{pre}")
    if not missing:
      lines.append("every label is in place: rerun the run's command to continue")
  return "\n".join(lines)
