"""The paper's Table 8 and Fig. 5: are the cases SSFT selects for pseudo-labels the ones
the stage-1 model segments well?

Each SSFT round row of a summary holds `unlabeled_dice` (stage-1 Dice of every unlabeled
case with ground truth, measured only for this table) and `pseudo` (the cases SSFT
selected). Per method and round, the selected cases' Dice is set against the
unselected ones', pooled over seeds, with a two-sided Mann-Whitney U test.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from assft_jax.report.fmt import fmt_p, mean_sd, num
from assft_jax.report.stats import Summary, mann_whitney_p, sd


@dataclasses.dataclass(frozen=True)
class PseudoCell:
  """One method at one round: Dice of unlabeled cases, pooled over seeds (no NaN)."""

  selected: np.ndarray  # [n_s] the SSFT-selected cases
  unselected: np.ndarray  # [n_u] the others
  seeds: tuple[int, ...]

  @property
  def p(self) -> float:
    return mann_whitney_p(self.selected, self.unselected)


def pseudo_quality(s: Summary) -> dict[tuple[str, int], PseudoCell]:
  """(method, round) -> PseudoCell, for the rounds that measured unlabeled Dice; ordered
  by the table's method order, then round."""
  acc: dict[tuple[str, int], tuple[list, list, list]] = {}
  for run in s.runs:
    for rr in run.rounds:
      if not rr.unlabeled_dice:
        continue
      chosen = set(rr.pseudo)
      sel, uns, seeds = acc.setdefault((run.method, rr.round), ([], [], []))
      for case, v in rr.unlabeled_dice.items():
        if not math.isnan(v):
          (sel if case in chosen else uns).append(v)
      seeds.append(run.seed)
  order = sorted(acc, key=lambda k: (s.methods.index(k[0]), k[1]))
  return {
    k: PseudoCell(np.array(acc[k][0]), np.array(acc[k][1]), tuple(sorted(acc[k][2]))) for k in order
  }


def _group(x: np.ndarray) -> str:
  return f"{mean_sd(float(np.mean(x)), sd(x))} (n = {len(x)})" if len(x) else "– (n = 0)"


def rows(s: Summary, cells: dict[tuple[str, int], PseudoCell]) -> list[list[str]]:
  labels = {b.round: b.header for b in s.budgets}
  out = [["Methods", "Round", "Seeds", "Selected", "Unselected", "Mann–Whitney p"]]
  for (m, r), c in cells.items():
    out.append(
      [m, labels[r], str(len(c.seeds)), _group(c.selected), _group(c.unselected), fmt_p(c.p)]
    )
  return out


def long_rows(summaries: list[Summary], cells: list[dict]) -> list[list[str]]:
  """cells[k]: pseudo_quality(summaries[k])."""
  out = [
    ["budget", "method", "round", "n_seeds", "n_selected", "selected_mean_pct"]
    + ["selected_sd_pct", "n_unselected", "unselected_mean_pct", "unselected_sd_pct", "p"]
  ]
  for s, by_key in zip(summaries, cells):
    for (m, r), c in by_key.items():
      stats = []
      for x in (c.selected, c.unselected):
        mean = float(np.mean(x)) if len(x) else math.nan
        stats += [str(len(x)), num(mean, 100), num(sd(x), 100)]
      out.append([s.spec.title, m, str(r), str(len(c.seeds)), *stats, num(c.p)])
  return out
