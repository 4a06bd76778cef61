"""The paper's ablations (Tables 6 and 7) and the controls: pairs of arms whose
difference isolates one part of ASSFT. Seeds are the replicates throughout.
"""

from __future__ import annotations

import numpy as np

from assft_jax.report.fmt import fmt_p, mean_sd, pct, sd_text
from assft_jax.report.nnactive import paired_ci, paired_p
from assft_jax.report.stats import Summary, mann_whitney_p, sd

BASELINE = "RAND"
# Table 6: the DKD metric alone, high vs low scores, each set against RAND.
TABLE6 = ((BASELINE, ""), ("DKD", ""), ("Low DKD", ""))
# Table 7: ASD high vs low, with the dynamic temperature tau(r) and with tau = 1; ENPY is
# ASD without the foreground mask. The second field is the paper's "Temperature function".
TABLE7 = (
  (BASELINE, "–"),
  ("ENPY", "–"),
  ("ASD (τ=1)", "τ = 1"),
  ("Low ASD (τ=1)", "τ = 1"),
  ("ASD", "τ(r)"),
  ("Low ASD", "τ(r)"),
)
# Each table's own claims, (A, B): high against low scores, the mask (ASD against ENPY)
# and the temperature function (tau(r) against tau = 1).
CONTRASTS6 = (("DKD", "Low DKD"),)
CONTRASTS7 = (
  ("ASD", "Low ASD"),
  ("ASD (τ=1)", "Low ASD (τ=1)"),
  ("ASD", "ENPY"),
  ("ASD", "ASD (τ=1)"),
)
ABLATIONS = (
  ("Table 6: the DKD metric", TABLE6, CONTRASTS6, False),
  ("Table 7: the ASD metric", TABLE7, CONTRASTS7, True),
)
# (A, B, what A - B isolates); shown where both arms ran.
CONTROLS = (
  ("ASSFT", BASELINE, "the query, SSFT and its steps together (the paper's headline)"),
  ("ASSFT", "RAND (matched)", "the query and the pseudo-labels, at equal optimiser steps"),
  ("ASSFT", "RAND+SSFT", "the query, with SSFT on both"),
  ("ASSFT", "DKD+ASD (matched)", "the pseudo-labels, at equal optimiser steps"),
  ("ASSFT", "DKD+ASD", "SSFT together with its extra steps (the paper's §4.5.3)"),
  ("DKD+ASD", BASELINE, "the query alone, without SSFT"),
  ("DKD+ASD (matched)", "RAND (matched)", "the query alone, at ASSFT's optimiser steps"),
  ("RAND+SSFT", "RAND (matched)", "SSFT, at equal optimiser steps"),
)


def ablation_rows(s: Summary, table, temperature: bool) -> list[list[str]] | None:
  """Rows of one ablation table at this budget; None when none of its own arms ran
  (RAND and ENPY alone are no ablation)."""
  own = {m for m, _ in table} - {BASELINE, "ENPY"}
  present = [(m, t) for m, t in table if m in s.methods]
  if not own & {m for m, _ in present}:
    return None
  budgets = s.table_budgets()
  head = ["Methods"] + (["Temperature function"] if temperature else [])
  for b in budgets:
    head += [b.header, f"p vs {BASELINE}"]
  rows = [head]
  for m, t in present:
    row = [m] + ([t] if temperature else [])
    for b in budgets:
      c, base = s.cells.get((m, b.round)), s.cells.get((BASELINE, b.round))
      if c is None:
        row += ["", ""]
        continue
      p = None if base is None or m == BASELINE else mann_whitney_p(c.seed_means, base.seed_means)
      row += [mean_sd(c.seed_mean, c.seed_sd), fmt_p(p)]
    rows.append(row)
  return rows


def contrast_rows(s: Summary, contrasts) -> list[list[str]] | None:
  """Per pair that ran: A's seed mean minus B's (x 100) and the Mann-Whitney U p of
  their seed means, at each budget."""
  pairs = [(a, b) for a, b in contrasts if a in s.methods and b in s.methods]
  if not pairs:
    return None
  budgets = s.table_budgets()
  rows = [["A − B"] + [b.header for b in budgets]]
  for a, b in pairs:
    row = [f"{a} − {b}"]
    for bud in budgets:
      ca, cb = s.cells.get((a, bud.round)), s.cells.get((b, bud.round))
      if ca is None or cb is None:
        row.append("")
        continue
      p = mann_whitney_p(ca.seed_means, cb.seed_means)
      row.append(f"{pct(ca.seed_mean - cb.seed_mean)} (p = {fmt_p(p)})")
    rows.append(row)
  return rows


def controls_present(methods: set[str]) -> list[tuple[str, str, str]]:
  return [c for c in CONTROLS if c[0] in methods and c[1] in methods]


def control_rows(s: Summary, aubcs: dict[str, dict[int, float]]) -> list[list[str]] | None:
  """At the last round, per control pair present: A - B over the seeds both have
  (mean +- SD of the paired differences, x 100, and their 95 % t interval), the paired
  t-test and the Mann-Whitney U test of the two arms' seed means, and the mean paired
  AUBC difference."""
  pairs = controls_present(set(s.methods))
  if not pairs:
    return None
  R = s.last_round
  rows = [
    ["A − B", "Isolates", f"Δ final Dice (r={R})", "95 % CI of Δ", "Seeds", "paired t p"]
    + ["Mann–Whitney p", "Δ AUBC"]
  ]
  for a, b, what in pairs:
    ca, cb = s.cells.get((a, R)), s.cells.get((b, R))
    row = [f"{a} − {b}", what]
    if ca is None or cb is None:
      rows.append(row + ["", "", "0", "", "", ""])
      continue
    common = sorted(set(ca.by_seed) & set(cb.by_seed))
    x, y = (np.array([c.by_seed[k] for k in common]) for c in (ca, cb))
    d = x - y
    p_t = paired_p(x, y) if len(d) > 1 else None
    ci = paired_ci(x, y) if len(d) > 1 else None  # NaN when every difference is equal
    ci_text = f"[{pct(ci[0])}, {pct(ci[1])}]" if ci and np.isfinite(ci).all() else ""
    aa, ab = aubcs.get(a, {}), aubcs.get(b, {})
    both = sorted(set(aa) & set(ab))
    d_aubc = pct(float(np.mean([aa[k] - ab[k] for k in both]))) if both else ""
    delta = f"{pct(float(np.mean(d)))} ± {sd_text(sd(d))}" if len(d) else ""
    rows.append(
      row
      + [delta, ci_text, str(len(d)), fmt_p(p_t)]
      + [fmt_p(mann_whitney_p(ca.seed_means, cb.seed_means)), d_aubc]
    )
  return rows
