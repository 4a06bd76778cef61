"""Hand-written run workdirs for the report tests, and a reader of report.md's tables."""

from __future__ import annotations

import csv
import json
from pathlib import Path


def write_run(
  root: Path,
  strategy: str,
  seed: int,
  means: list[float],
  *,
  ssft: bool = False,
  stage3: str | None = None,
  budget: str = "5%",
  per_round: int = 2,
  complete: bool = True,
  extra: dict[int, dict] | None = None,
  cell: str | None = None,
) -> None:
  """One run whose round r has a single test case of Dice means[r] (so the run's mean
  Dice at r is means[r]); extra[r] is merged into round r's row."""
  wd = root / (cell or strategy) / budget.replace("%", "pct") / f"seed_{seed}"
  wd.mkdir(parents=True)
  rows = [
    {
      "round": r,
      "n_labeled": 1 + per_round * r,
      "dice_per_case": {"c0": v},
      **(extra or {}).get(r, {}),
    }
    for r, v in enumerate(means)
  ]
  summary = {
    "strategy": strategy,
    "ssft": ssft,
    "seed": seed,
    "complete": complete,
    "budget_per_round": per_round,
    "budget_label": ["init"] + [f"{r * float(budget[:-1]):g}%" for r in range(1, len(means))],
    "rounds": rows,
  }
  if stage3 is not None:
    summary["stage3"] = stage3
  (wd / "summary.json").write_text(json.dumps(summary))
  (wd / "config.json").write_text(json.dumps({"seed": seed, "al": {"budget": budget}}))


def read_csv(path: Path) -> list[dict[str, str]]:
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def md_table(md: str, heading: str) -> list[list[str]]:
  block = md.split(heading, 1)[1].strip().split("\n\n")
  block = next(b for b in block if b.startswith("|"))
  rows = [line.strip().strip("|").split("|") for line in block.splitlines()]
  return [[c.strip() for c in row] for row in rows if not set("".join(row)) <= set("-")]
