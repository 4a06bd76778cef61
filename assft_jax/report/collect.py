"""Reading a sweep directory: every run's `summary.json` becomes one `RunResult`.

A sweep directory holds one workdir per cell (`DIR/<strategy>/seed_<k>/`), but any
directory tree works: every `summary.json` below DIR is one run. DIR may itself be a
single run's workdir. A run's per-round budget is read from its summary
(`budget_per_round`, and `budget`: `--budget` as given; for a summary without it, the
run's `config.json` gives it), so runs with different budgets never pool.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from assft_jax.config import BOUNDS
from assft_jax.errors import AssftError


class ReportError(AssftError, ValueError):
  """Bad or missing report input; the message names the file and what is wrong."""


# The paper's display names (Tables 1-5). Keys are normalised: lower case, '-' -> '_'.
DISPLAY_NAMES = {
  "rand": "RAND",
  "random": "RAND",
  "fg_rand": "FG-RAND",
  "fg_random": "FG-RAND",
  "enpy": "ENPY",
  "entropy": "ENPY",
  "lcon": "LCON",
  "lc": "LCON",
  "least_confidence": "LCON",
  "mmar": "MMAR",
  "margin": "MMAR",
  "coreset": "Core-set",
  "core_set": "Core-set",
  "badge": "BADGE",
  "sann": "SANN",
  "ugtst": "UGTST",
  "cup": "CUP",
  "dkd": "DKD",
  "asd": "ASD",
  "dkd_low": "Low DKD",
  "asd_low": "Low ASD",
  "asd_tau1": "ASD (τ=1)",  # Tables 6-7
  "asd_tau1_low": "Low ASD (τ=1)",
  "dkd_asd": "DKD+ASD",
  "dkd+asd": "DKD+ASD",
  "assft": "ASSFT",
}
# Row order of the paper's tables; unknown names follow in alphabetical order, and the
# reference method (ASSFT) always comes last, as in the paper.
PAPER_ORDER = (
  "RAND",
  "FG-RAND",
  "ENPY",
  "LCON",
  "MMAR",
  "Core-set",
  "BADGE",
  "SANN",
  "UGTST",
  "CUP",
  "DKD",
  "Low DKD",
  "ASD",
  "Low ASD",
  "ASD (τ=1)",
  "Low ASD (τ=1)",
  "DKD+ASD",
  "ASSFT",
)
MATCHED = " (matched)"  # the compute-matched control (--stage3=supervised)
SSFT = "+SSFT"
STAGE3 = ("pseudo", "supervised", "none")


def display_name(strategy: str, ssft: bool, stage3: str = "none") -> str:
  """The paper's name of a run's method, e.g. ("dkd_asd", False) -> "DKD+ASD".

  `assft` is the registry's alias of `dkd_asd`, so both name ASSFT with selective
  semi-supervised fine-tuning and DKD+ASD without it (the paper's two rows). Any other
  strategy run with SSFT gets a "+SSFT" suffix, so it never pools with the same
  strategy run without it. The compute-matched control (stage3 "supervised": a second
  supervised stage instead of SSFT) gets " (matched)", e.g. "DKD+ASD (matched)".
  """
  key = strategy.strip().lower().replace("-", "_")
  name = DISPLAY_NAMES.get(key, strategy)
  if name in ("ASSFT", "DKD+ASD"):
    name = "ASSFT" if ssft else "DKD+ASD"
  elif ssft:
    name += SSFT
  return name + MATCHED if stage3 == "supervised" else name


def method_sort_key(name: str, reference: str = "ASSFT") -> tuple:
  """The paper's row order; a method's matched control and its +SSFT run follow it."""
  if name == reference:
    return (2, 0, 0, name)
  base, variant = name, 0
  if name.endswith(MATCHED):
    base, variant = name.removesuffix(MATCHED), 1
  elif name.endswith(SSFT):
    base, variant = name.removesuffix(SSFT), 2
  if base in PAPER_ORDER:
    return (0, PAPER_ORDER.index(base), variant, name)
  return (1, base, variant, name)


@dataclasses.dataclass(frozen=True)
class BudgetSpec:
  """The per-round query budget of a run: `--budget` as given (e.g. "5%", from the
  summary's `budget`, else the run's config.json) and n_B, the cases it meant per round (summary's `budget_per_round`).
  Either is None where the run did not record it. Cells never pool across specs."""

  text: str | None
  per_round: int | None

  @property
  def title(self) -> str:
    n = f"n_B = {self.per_round} cases per round" if self.per_round is not None else ""
    if self.text is None:
      return n or "budget not recorded"
    return f"--budget={self.text}" + (f" ({n})" if n else "")

  @property
  def sort_key(self) -> tuple:
    return (self.per_round is None, self.per_round or 0, self.text or "")


@dataclasses.dataclass(frozen=True)
class RoundResult:
  """One evaluated round of one run. Dice values are fractions in [0, 1]."""

  round: int
  n_labeled: int
  label: str  # the budget's display label, e.g. "5%" or "n=3"
  dice_per_case: Mapping[str, float]
  dice_per_class: Mapping[str, float]
  queried: tuple[str, ...]
  pseudo: tuple[str, ...]  # the unlabeled cases SSFT selected this round
  # Stage-1 Dice of every unlabeled case with ground truth (Table 8); empty without SSFT.
  unlabeled_dice: Mapping[str, float]
  # Per-case HD95 (mm) and NSD (fraction) of the test cases, NaN where excluded; empty in
  # a summary that does not record them.
  hd95_per_case: Mapping[str, float] = dataclasses.field(default_factory=dict)
  nsd_per_case: Mapping[str, float] = dataclasses.field(default_factory=dict)
  nsd_tolerance_mm: float | None = None
  # The conv kernel that made the round (None in a summary that does not record it)
  # and whether §3.4's exclusion was lifted for its query (assft_jax/plan.py).
  conv_impl: str | None = None
  exclusion_lifted: bool = False
  # Dice of the round's model on every target-pool case with ground truth (the pool
  # protocols, `protocol_view`); empty in a summary that does not record it.
  pool_dice_per_case: Mapping[str, float] = dataclasses.field(default_factory=dict)

  @property
  def mean_dice(self) -> float:
    """The run's mean test Dice at this round (NaN cases left out; NaN if none is left)."""
    v = [x for x in self.dice_per_case.values() if not math.isnan(x)]
    return sum(v) / len(v) if v else math.nan


@dataclasses.dataclass(frozen=True)
class RunResult:
  workdir: Path
  strategy: str
  method: str
  ssft: bool
  stage3: str  # what stage 3 did: "pseudo", "supervised" (the matched control) or "none"
  budget: BudgetSpec
  seed: int
  complete: bool
  rounds: tuple[RoundResult, ...]
  lower_bound: float | None
  upper_bound: float | None

  @property
  def bound(self) -> str | None:
    """ "lower_bound"/"upper_bound" for a bound run (no active learning), else None."""
    return self.strategy if self.strategy in BOUNDS else None


PROTOCOLS = {
  "a": "the held-out test split",
  "b": "the target-pool cases still unlabeled at that round",
  "c": "the whole target pool, queried cases included",
}
"""What each evaluation protocol scores: every round's model on these cases. (a) is the
held-out split the tables use; (b) and (c) are the paper's test-time reading, where the
model is judged on the target domain's own (unlabeled, or all) scans."""


def protocol_view(runs: Sequence[RunResult], protocol: str) -> list[RunResult]:
  """`runs` with each round's per-case Dice replaced by the protocol's: (b) the pool
  cases not labeled by that round (the init case and every query up to it; an upper
  bound labels the whole pool, so it has none), (c) every pool case. A case without
  ground truth is NaN there: left out, and counted like any NaN Dice. Per-class and
  surface metrics are the test split's only, so they are dropped."""
  if protocol == "a":
    return list(runs)
  if protocol not in PROTOCOLS:
    raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")
  out = []
  for run in runs:
    labeled: set[str] = set()
    rounds = []
    for x in run.rounds:
      labeled |= set(x.queried)
      if run.bound == "upper_bound":
        labeled = set(x.pool_dice_per_case)
      keep = {c: v for c, v in x.pool_dice_per_case.items() if protocol == "c" or c not in labeled}
      rounds.append(
        dataclasses.replace(
          x, dice_per_case=keep, dice_per_class={}, hd95_per_case={}, nsd_per_case={}
        )
      )
    out.append(dataclasses.replace(run, rounds=tuple(rounds)))
  return out


def _fail(path: Path, what: str) -> ReportError:
  return ReportError(f"{path}: {what}")


def _dice(path: Path, where: str, v: Any) -> float:
  """A Dice value as float; NaN is kept (dropped later, and counted in the report)."""
  if isinstance(v, bool) or not isinstance(v, (int, float)) and v is not None:
    raise _fail(path, f"{where} is {v!r}, expected a number in [0, 1]")
  x = math.nan if v is None else float(v)
  if not math.isnan(x) and not 0.0 <= x <= 1.0:
    raise _fail(path, f"{where} = {x} is outside [0, 1] (Dice and NSD are fractions)")
  return x


def _mm(path: Path, where: str, v: Any) -> float:
  """A distance in mm as float (>= 0); NaN for null (HD95 undefined), kept like Dice's."""
  if isinstance(v, bool) or not isinstance(v, (int, float)) and v is not None:
    raise _fail(path, f"{where} is {v!r}, expected a distance in mm")
  x = math.nan if v is None else float(v)
  if x < 0:
    raise _fail(path, f"{where} = {x} is negative (a distance in mm)")
  return x


def _per_case(path: Path, i: int, d: Mapping, key: str, parse) -> dict[str, float]:
  """rounds[i][key], an optional {case id: value} object, through `parse`."""
  v = d.get(key) or {}
  if not isinstance(v, dict):
    raise _fail(path, f"rounds[{i}].{key} must be an object")
  return {str(k): parse(path, f"rounds[{i}].{key}[{k!r}]", x) for k, x in v.items()}


def _budget_label(labels: Any, r: int, n_labeled: int) -> str:
  """`budget_label` is indexed by round number (entry 0 = the one-shot init)."""
  if isinstance(labels, list) and 0 <= r < len(labels) and labels[r]:
    return str(labels[r])
  return f"n={n_labeled}"


def _parse_round(path: Path, i: int, d: Any, labels: Any) -> RoundResult:
  if not isinstance(d, dict):
    raise _fail(path, f"rounds[{i}] is not an object")
  for k in ("round", "n_labeled", "dice_per_case"):
    if k not in d:
      raise _fail(path, f"rounds[{i}] lacks the key {k!r}")
  per_case, per_class = d["dice_per_case"], d.get("dice_per_class") or {}
  unlabeled = d.get("unlabeled_dice") or {}
  if not all(isinstance(x, dict) for x in (per_case, per_class, unlabeled)):
    raise _fail(path, f"rounds[{i}].dice_per_case/dice_per_class/unlabeled_dice must be objects")
  r, n = int(d["round"]), int(d["n_labeled"])
  return RoundResult(
    round=r,
    n_labeled=n,
    label=_budget_label(labels, r, n),
    dice_per_case={
      str(k): _dice(path, f"rounds[{i}].dice_per_case[{k!r}]", v) for k, v in per_case.items()
    },
    dice_per_class={
      str(k): _dice(path, f"rounds[{i}].dice_per_class[{k!r}]", v) for k, v in per_class.items()
    },
    queried=tuple(str(q) for q in d.get("queried") or ()),
    pseudo=tuple(str(q) for q in d.get("pseudo") or ()),
    unlabeled_dice={
      str(k): _dice(path, f"rounds[{i}].unlabeled_dice[{k!r}]", v) for k, v in unlabeled.items()
    },
    conv_impl=d.get("conv_impl"),
    exclusion_lifted=bool(d.get("exclusion_lifted", False)),
    hd95_per_case=_per_case(path, i, d, "hd95_per_case", _mm),
    nsd_per_case=_per_case(path, i, d, "nsd_per_case", _dice),
    pool_dice_per_case=_per_case(path, i, d, "pool_dice_per_case", _dice),
    nsd_tolerance_mm=None
    if d.get("nsd_tolerance_mm") is None
    else _mm(path, f"rounds[{i}].nsd_tolerance_mm", d["nsd_tolerance_mm"]),
  )


def _bound(path: Path, d: Mapping, key: str) -> float | None:
  v = d.get(key)
  return None if v is None else _dice(path, key, v)


def _budget_text(path: Path, d: Mapping) -> str | None:
  """`--budget` as given: the summary's `budget`, else the run's config.json beside it;
  None without either."""
  text = d.get("budget")
  if text is not None:
    if not isinstance(text, str) or not text.strip():
      raise _fail(path, f'budget is {text!r}, expected the --budget text, e.g. "5%"')
    return text.strip()
  cfg_path = path.parent / "config.json"
  if not cfg_path.exists():
    return None
  try:
    budget = json.loads(cfg_path.read_text())["al"]["budget"]
  except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
    raise _fail(cfg_path, f"cannot read al.budget ({type(e).__name__}: {e})") from e
  return str(budget).strip()


def _stage3(path: Path, d: Mapping, ssft: bool) -> str:
  # Summaries written before the matched control existed have no "stage3": SSFT's stage
  # 3 trained on pseudo-labels, and a run without SSFT had none.
  v = d.get("stage3", "pseudo" if ssft else "none")
  if v not in STAGE3:
    raise _fail(path, f"stage3 is {v!r}, expected one of {', '.join(STAGE3)}")
  return v


def load_run(path: Path) -> RunResult:
  """Parses one `summary.json`; raises ReportError naming the file on bad content."""
  try:
    d = json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise _fail(path, f"cannot read JSON ({e})") from e
  if not isinstance(d, dict):
    raise _fail(path, "top level is not an object")
  for k in ("strategy", "seed", "rounds"):
    if k not in d:
      raise _fail(path, f"lacks the key {k!r}")
  if not isinstance(d["rounds"], list):
    raise _fail(path, "'rounds' is not a list")
  labels = d.get("budget_label")
  rounds = tuple(
    sorted(
      (_parse_round(path, i, x, labels) for i, x in enumerate(d["rounds"])), key=lambda x: x.round
    )
  )
  ssft = bool(d.get("ssft", False))
  stage3 = _stage3(path, d, ssft)
  strategy = str(d["strategy"])
  per_round = d.get("budget_per_round")
  if per_round is not None and (isinstance(per_round, bool) or not isinstance(per_round, int)):
    raise _fail(path, f"budget_per_round is {per_round!r}, expected a count")
  # A bound run queries nothing: it has no budget, and one bound serves every budget.
  budget = (
    BudgetSpec(None, None) if strategy in BOUNDS else BudgetSpec(_budget_text(path, d), per_round)
  )
  return RunResult(
    workdir=path.parent,
    strategy=strategy,
    method=display_name(strategy, ssft, stage3),
    ssft=ssft,
    stage3=stage3,
    budget=budget,
    seed=int(d["seed"]),
    complete=bool(d.get("complete", False)),
    rounds=rounds,
    lower_bound=_bound(path, d, "lower_bound"),
    upper_bound=_bound(path, d, "upper_bound"),
  )


def find_summaries(root: Path) -> list[Path]:
  """Every summary.json below root (root included), in a stable order."""
  out = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("round_"))
    if "summary.json" in filenames:
      out.append(Path(dirpath) / "summary.json")
  return sorted(out)


def load_runs(root: str | os.PathLike, arms: Sequence[str] | None = None) -> list[RunResult]:
  """All runs below `root`, or only those of the sweep arms `arms` (the first folder
  below root: a sweep's token, e.g. random+ssft). ReportError if root is missing or holds
  no run (of those arms)."""
  root = Path(root)
  if not root.is_dir():
    raise ReportError(f"{root}: not a directory")
  paths = find_summaries(root)
  if arms is not None:
    paths = [p for p in paths if p.relative_to(root).parts[0] in set(arms)]
  if not paths:
    which = f" of the arms {', '.join(arms)}" if arms is not None else ""
    raise ReportError(
      f"{root}: no runs found{which} (no summary.json below it; expected "
      f"{root}/<strategy>/seed_<k>/summary.json)"
    )
  runs = [load_run(p) for p in paths]
  if not any(r.rounds for r in runs):
    raise ReportError(f"{root}: {len(runs)} summary.json found, but none has a round yet")
  seen: dict[tuple, Path] = {}
  for r in runs:  # seeds are the replicates: one run per (method, budget, seed)
    key = (r.method, r.budget, r.seed)
    if key in seen:
      raise ReportError(
        f"{seen[key]} and {r.workdir}: two runs of {r.method}, seed {r.seed}, "
        f"{r.budget.title}; a seed must be one replicate (remove one)"
      )
    seen[key] = r.workdir
  return runs
