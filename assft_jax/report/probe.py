"""The probe's section of a report (`assft_jax.probe`, `python -m experiments.probe`): how
it was measured, each score's ρ with the true gain, random against the best pick."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from assft_jax.report.collect import ReportError

SECTION = "## Probe: what each score ranks"


def find(root: Path) -> tuple[dict, str] | None:
  """(probe.json, the scatter's path relative to root) of ROOT/probe, or None."""
  path = Path(root) / "probe" / "probe.json"
  if not path.is_file():
    return None
  try:
    return json.loads(path.read_text()), "probe/probe_scatter.png"
  except (OSError, json.JSONDecodeError) as e:
    raise ReportError(f"{path}: cannot read the probe ({e})") from e


def markdown(res: Mapping, figure: str | None = None) -> list[str]:
  """The probe's section: how it was measured, the ρ table, random against the best."""
  pct = lambda v: f"{100 * v:+.2f}"
  lines = [
    SECTION,
    "",
    f"From round {res['round']} of `{res['run']}` (|L| = {res['n_labeled']}): "
    f"{len(res['candidates'])} candidates, each fine-tuned on L ∪ {{x}} for one stage "
    f"under {len(res['seeds'])} seed(s), against L alone under the same seeds. True gain: "
    "the mean test Dice difference (× 100). ρ: Spearman of the score against the gain "
    "(scipy), with a 95 % bootstrap interval over the candidates; a score ranks what it "
    "claims when ρ is positive toward the end its query takes (the last column's sign). "
    "Pick's gain: the gain of the candidate the score would query first.",
    "",
    "| Score | Queries | ρ | 95 % CI | p | ρ toward its query | Pick's gain |",
    "|---|---|---|---|---|---|---|",
  ]
  for r in res["scores"]:
    lo, hi = r["ci"]
    lines.append(
      f"| {r['score']} | {r['queried_end']} | {r['rho']:+.2f} | [{lo:+.2f}, {hi:+.2f}] | "
      f"{r['p']:.2g} | {r['rho_toward_query']:+.2f} | {pct(r['gain_of_its_pick'])} |"
    )
  lines += [
    "",
    f"A random pick gains {pct(res['random_gain'])} on average (the mean over the "
    f"candidates); the best candidate ({res['best_case']}) gains {pct(res['best_gain'])}, "
    f"the worst {pct(res['worst_gain'])}.",
    "",
  ]
  if res.get("by_stratum"):
    lines += ["| Stratum | Candidates | Mean gain |", "|---|---|---|"]
    lines += [
      f"| {k} | {v['n']} | {pct(v['mean_gain'])} |" for k, v in sorted(res["by_stratum"].items())
    ]
    lines.append("")
  if figure:
    lines += [f"![Probe: score against true gain]({figure})", ""]
  return lines
