"""The benchmark's statistical power, read from the `power.json` that
`assft_jax.power` writes, shown at the top of the report and beside every comparison.

Training noise: the SD of the mean test Dice of one labeled set over training seeds.
Selection effect: the mean test Dice of a well-chosen set minus a poorly chosen one's.
A benchmark can rank strategies only when the effect is several times the noise.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from assft_jax.report.collect import ReportError
from assft_jax.report.fmt import fmt_p, markdown_table, mean_sd, pct

DEFAULT = Path("power") / "power.json"  # below the report's root, as experiments.power writes
TARGET_RATIO = 4.0  # the effect must be at least 4x the noise
SETS = ("well", "poor")


@dataclasses.dataclass(frozen=True)
class Power:
  """power.json's numbers; Dice values are fractions, sets are "well" and "poor"."""

  path: Path
  mean: dict[str, float]  # set -> mean test Dice over seeds
  sd: dict[str, float]  # set -> SD over seeds (NaN for one seed)
  noise_sd: float  # pooled over the two sets
  effect: float  # mean["well"] - mean["poor"]
  ratio: float  # effect / noise_sd
  welch_p: float  # Welch's t-test of the sets' seed means
  by_group: dict[str, dict[str, float]]  # set -> stratum -> mean Dice on its test cases
  n_test: int
  test_groups: dict[str, int]  # stratum -> test cases
  set_size: int
  steps: int
  seeds: list[int]
  rule: str = (
    "well: every stratum of --stratify_by in its share of the pool; poor: the largest "
    "stratum only"
  )  # how the two sets were chosen (power.json's "rule"; older files: by strata)

  @property
  def meets_target(self) -> bool:
    return self.ratio >= TARGET_RATIO


def _number(path: Path, where: str, v: Any) -> float:
  # json reads NaN and Infinity as floats: a one-seed SD is NaN, a zero noise gives inf.
  if isinstance(v, bool) or not isinstance(v, (int, float)):
    raise ReportError(f"{path}: {where} is {v!r}, expected a number")
  return float(v)


def _count(path: Path, where: str, v: Any) -> int:
  if isinstance(v, bool) or not isinstance(v, int) or v < 0:
    raise ReportError(f"{path}: {where} is {v!r}, expected a count")
  return v


def _object(path: Path, where: str, v: Any) -> Mapping:
  if not isinstance(v, dict):
    raise ReportError(f"{path}: {where} is {v!r}, expected an object")
  return v


def _per_set(path: Path, d: Mapping, key: str) -> dict[str, float]:
  v = _object(path, key, d[key])
  missing = [n for n in SETS if n not in v]
  if missing:
    raise ReportError(f"{path}: {key} lacks {', '.join(missing)}")
  return {n: _number(path, f"{key}.{n}", v[n]) for n in SETS}


def load(path: Path) -> Power:
  """Parses power.json; raises ReportError naming the file and the bad key."""
  try:
    d = json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise ReportError(f"{path}: cannot read JSON ({e})") from e
  d = _object(path, "the top level", d)
  keys = ("mean", "sd", "noise_sd", "effect", "ratio", "welch_p", "by_group", "n_test")
  keys += ("test_groups", "set_size", "steps", "seeds")
  missing = [k for k in keys if k not in d]
  if missing:
    raise ReportError(f"{path}: lacks {', '.join(map(repr, missing))} (not a power.json?)")
  groups = _object(path, "by_group", d["by_group"])
  by_group = {
    n: {
      str(g): _number(path, f"by_group.{n}.{g}", v)
      for g, v in _object(path, f"by_group.{n}", groups.get(n, {})).items()
    }
    for n in SETS
  }
  seeds = d["seeds"]
  if not isinstance(seeds, list):
    raise ReportError(f"{path}: seeds is {seeds!r}, expected a list")
  return Power(
    path=path,
    mean=_per_set(path, d, "mean"),
    sd=_per_set(path, d, "sd"),
    noise_sd=_number(path, "noise_sd", d["noise_sd"]),
    effect=_number(path, "effect", d["effect"]),
    ratio=_number(path, "ratio", d["ratio"]),
    welch_p=_number(path, "welch_p", d["welch_p"]),
    by_group=by_group,
    n_test=_count(path, "n_test", d["n_test"]),
    test_groups={
      str(g): _count(path, f"test_groups.{g}", v)
      for g, v in _object(path, "test_groups", d["test_groups"]).items()
    },
    set_size=_count(path, "set_size", d["set_size"]),
    steps=_count(path, "steps", d["steps"]),
    seeds=[_count(path, f"seeds[{i}]", s) for i, s in enumerate(seeds)],
    **({"rule": str(d["rule"])} if "rule" in d else {}),
  )


def find(root: Path, given: str | os.PathLike | None) -> Power | None:
  """The measurement at `given` (--power; it must exist), else at root/power/power.json;
  None when there is none."""
  if given is not None:
    path = Path(given)
    if not path.is_file():
      raise ReportError(
        f"--power={given}: no such file (expected the power.json of experiments.power)"
      )
    return load(path)
  path = root / DEFAULT
  return load(path) if path.is_file() else None


def ratio_text(p: Power) -> str:
  r = "n/a" if math.isnan(p.ratio) else "∞" if math.isinf(p.ratio) else f"{p.ratio:.1f}×"
  verdict = "meets" if p.meets_target else "falls short of"
  return f"{r} ({verdict} the {TARGET_RATIO:g}× target)"


def line(p: Power | None) -> list[str]:
  """The one-line reminder at the head of every budget's section (none when unmeasured:
  the opening section says so once)."""
  if p is None:
    return []
  return [
    f"Power of the benchmark: training noise SD {pct(p.noise_sd)}, selection effect "
    f"{pct(p.effect)}, ratio {ratio_text(p)} (Dice × 100; see *Power of this benchmark*). "
    "Compare the differences below with the noise.",
    "",
  ]


def markdown(p: Power | None) -> list[str]:
  """The report's opening section; one line when the power was not measured."""
  out = ["## Power of this benchmark", ""]
  if p is None:
    return out + [
      f"The power was not measured for these runs (no `{DEFAULT}` below the report's "
      "directory and no --power): run `python -m experiments.power` on the benchmark.",
      "",
    ]
  out += [
    f"From `{p.path}` (`experiments.power`): a well-chosen labeled set and a poorly chosen "
    f"one ({p.rule}), {p.set_size} cases each, each trained from F(0) for {p.steps} optimiser steps under "
    f"{len(p.seeds)} training seeds and tested on {p.n_test} test cases. Dice × 100. A "
    f"benchmark can rank strategies only when the selection effect is several times the "
    f"training noise (target: {TARGET_RATIO:g}×).",
    "",
    markdown_table(
      [
        ["Quantity", "Value"],
        ["Training noise (SD over seeds, pooled over the two sets)", pct(p.noise_sd)],
        ["Selection effect (well − poor)", pct(p.effect)],
        ["Effect / noise", ratio_text(p)],
        ["Welch's t-test p, well vs poor over seeds", fmt_p(p.welch_p)],
        ["Well-chosen set, mean ± SD over seeds", mean_sd(p.mean["well"], p.sd["well"])],
        ["Poorly chosen set, mean ± SD over seeds", mean_sd(p.mean["poor"], p.sd["poor"])],
        ["Set size", f"{p.set_size} cases"],
        ["Optimiser steps", str(p.steps)],
        ["Seeds", ", ".join(map(str, p.seeds))],
      ]
    ),
    "#### Mean test Dice per stratum",
    "",
    markdown_table(_stratum_rows(p)),
  ]
  return out


def _stratum_rows(p: Power) -> list[list[str]]:
  strata = sorted(set(p.test_groups) | {g for v in p.by_group.values() for g in v})
  rows = [["Stratum", "Test cases", "Well-chosen set", "Poorly chosen set", "Well − poor"]]
  for g in strata:
    well, poor = (p.by_group[n].get(g, math.nan) for n in SETS)
    n = p.test_groups.get(g)
    rows.append([g, "" if n is None else str(n), pct(well), pct(poor), pct(well - poor)])
  return rows
