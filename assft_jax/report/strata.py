"""What each method queried, by stratum (scanner, site, vendor, ...): the share of its
queried cases in each group of dataset.json's "cases" table, beside the pool's shares.

Why: on data from several domains a query wins or loses mostly by how it covers them
(the power measurement's well and poor sets differ only in that). A strategy that
over-draws one domain shows it here, which the Dice tables alone cannot say.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from pathlib import Path

from assft_jax.report.collect import ReportError, RunResult
from assft_jax.report.stats import Summary


@dataclasses.dataclass(frozen=True)
class Strata:
  fields: list[str]
  group_of: dict[str, str] | None  # case id -> stratum; None when no table was found
  pools: dict[Path, list[str]]  # run workdir -> its split's pool


def _read_json(path: Path) -> dict:
  """{} when absent; ReportError naming a damaged file. (workdir.read_json would pull
  jax into the report.)"""
  try:
    return json.loads(path.read_text()) if path.is_file() else {}
  except (OSError, json.JSONDecodeError) as e:
    raise ReportError(f"{path}: cannot read JSON ({e})") from e


def _table_path(data: list[dict], groups: str | os.PathLike | None) -> Path | None:
  """`groups` (a dataset.json), else the runs' --data_dir/dataset.json when it exists."""
  if groups is not None:
    path = Path(groups)
    if not path.is_file():
      raise ReportError(f"--groups={groups}: no such file (a dataset.json with a 'cases' table)")
    return path
  dirs = {d["data_dir"] for d in data if d.get("data_dir")}
  return next(
    (Path(d) / "dataset.json" for d in dirs if (Path(d) / "dataset.json").is_file()), None
  )


def load(
  runs: list[RunResult],
  groups: str | os.PathLike | None,
  group_by: list[str] | None,
) -> Strata | None:
  """The strata of `runs` (each run's config.json and split.json read once): fields from
  `group_by`, else the runs' --stratify_by; None without fields. The 'cases' table from
  `groups`, else the runs' --data_dir/dataset.json; group_of None when neither exists."""
  data = [_read_json(run.workdir / "config.json").get("data") or {} for run in runs]
  fields = list(group_by or next((d["stratify_by"] for d in data if d.get("stratify_by")), []))
  if not fields:
    return None
  pools = {
    run.workdir: list(_read_json(run.workdir / "split.json").get("pool", [])) for run in runs
  }
  from assft_jax.data import case_groups, load_index, table_groups
  from assft_jax.data.intensity import GROUP_FIELD

  if GROUP_FIELD in fields and groups is None:
    # Derived from the images (data.intensity), as the runs' split was: the runs' dataset.
    root = next((d["data_dir"] for d in data if d.get("data_dir")), None)
    if root is None:
      return Strata(fields, None, pools)
    return Strata(fields, case_groups(load_index(root, validate="none"), fields), pools)
  path = _table_path(data, groups)
  if path is None:
    return Strata(fields, None, pools)
  ids = set().union(*pools.values(), *(rr.queried for run in runs for rr in run.rounds))
  return Strata(fields, table_groups(path, sorted(ids), fields, "--groups"), pools)


def _shares(counts: Counter, groups: list[str]) -> list[float]:
  n = sum(counts.values())
  return [counts[g] / n if n else float("nan") for g in groups]


def rows(s: Summary, st: Strata) -> list[list[str]] | None:
  """Pool row (the mean over seeds of each split's pool shares), then per method the
  shares (%) of every case it queried in rounds 1..R over all its seeds, and their
  count. Round 0 is left out: its one case is the init pick every arm of a seed shares.
  None when no method queried."""
  group_of = st.group_of
  groups = sorted(set(group_of.values()))
  pools = [p for p in {run.seed: st.pools[run.workdir] for run in s.runs}.values() if p]
  methods = []
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
      shares = _shares(counts, groups)
      methods.append([m, str(sum(counts.values()))] + [f"{100 * v:.0f}" for v in shares])
  if not methods:
    return None
  out = [["Methods", "Cases"] + groups]
  if pools:
    pool_shares = [_shares(Counter(group_of[c] for c in p), groups) for p in pools]
    mean = [sum(col) / len(col) for col in zip(*pool_shares)]
    n = sum(len(p) for p in pools) / len(pools)
    out.append(["Pool (mean over seeds)", f"{n:g}"] + [f"{100 * v:.0f}" for v in mean])
  return out + methods
