"""What each method queried, by stratum (scanner, site, vendor, ...): the share of its
queried cases in each group of dataset.json's "cases" table, beside the pool's shares.

Why: on data from several domains a query wins or loses mostly by how it covers them
(the power measurement's well and poor sets differ only in that). A strategy that
over-draws one domain shows it here, which the Dice tables alone cannot say.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from assft_jax.report.collect import ReportError, RunResult
from assft_jax.report.stats import Summary


def _config(run: RunResult) -> dict:
  path = run.workdir / "config.json"
  try:
    return json.loads(path.read_text()) if path.is_file() else {}
  except (OSError, json.JSONDecodeError) as e:
    raise ReportError(f"{path}: cannot read JSON ({e})") from e


def fields_of(runs: list[RunResult], group_by: list[str] | None) -> list[str]:
  """`group_by`, else the runs' --stratify_by (the first run that has one), else []."""
  if group_by:
    return list(group_by)
  for run in runs:
    fields = (_config(run).get("data") or {}).get("stratify_by") or []
    if fields:
      return list(fields)
  return []


def table_path(runs: list[RunResult], groups: str | os.PathLike | None) -> Path | None:
  """`groups` (a dataset.json), else the runs' --data_dir/dataset.json when it exists."""
  if groups is not None:
    path = Path(groups)
    if not path.is_file():
      raise ReportError(f"--groups={groups}: no such file (a dataset.json with a 'cases' table)")
    return path
  for run in runs:
    data_dir = (_config(run).get("data") or {}).get("data_dir")
    if data_dir and (Path(data_dir) / "dataset.json").is_file():
      return Path(data_dir) / "dataset.json"
  return None


def _pool(run: RunResult) -> list[str]:
  path = run.workdir / "split.json"
  try:
    return list(json.loads(path.read_text()).get("pool", [])) if path.is_file() else []
  except (OSError, json.JSONDecodeError) as e:
    raise ReportError(f"{path}: cannot read JSON ({e})") from e


def case_ids(summaries: list[Summary]) -> set[str]:
  """Every id the tables below name: the queried cases and each run's pool."""
  ids = set()
  for s in summaries:
    for run in s.runs:
      ids |= set(_pool(run))
      for rr in run.rounds:
        ids |= set(rr.queried)
  return ids


def _shares(counts: Counter, groups: list[str]) -> list[float]:
  n = sum(counts.values())
  return [counts[g] / n if n else float("nan") for g in groups]


def rows(s: Summary, group_of: dict[str, str]) -> list[list[str]] | None:
  """Pool row (the mean over seeds of each split's pool shares), then per method the
  shares (%) of every case it queried in rounds 1..R over all its seeds, and their
  count. Round 0 is left out: its one case is the shared random start."""
  groups = sorted(set(group_of.values()))
  pools = {run.seed: _pool(run) for run in s.runs}
  pool_shares = [_shares(Counter(group_of[c] for c in p), groups) for p in pools.values() if p]
  out = [["Methods", "Cases"] + groups]
  if pool_shares:
    mean = [sum(col) / len(col) for col in zip(*pool_shares)]
    n = sum(len(p) for p in pools.values() if p) / len(pool_shares)
    out.append(["Pool (mean over seeds)", f"{n:g}"] + [f"{100 * v:.0f}" for v in mean])
  any_query = False
  for m in s.methods:
    counts = Counter(
      group_of[c]
      for run in s.runs
      if run.method == m
      for rr in run.rounds
      if rr.round > 0
      for c in rr.queried
    )
    if counts:
      any_query = True
      n = sum(counts.values())
      out.append([m, str(n)] + [f"{100 * v:.0f}" for v in _shares(counts, groups)])
  return out if any_query else None
