"""The report's evaluation on small made-up summaries: nnActive's AUBC and pairwise
penalty matrix (hand-computed), Holm's step-down, Tables 6-8, the controls, budget
keying, and "–" for an SD over one value.

Expected numbers are derived by hand in the comments, or recomputed with scipy from the
values the test wrote; never read back from the code under test.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.stats

from assft_jax.report import OUTPUTS, ReportError, write_report
from assft_jax.report.nnactive import holm_reject
from tests._report_helpers import md_table as _md_table
from tests._report_helpers import read_csv as _csv
from tests._report_helpers import write_run as _run


def t2_p(d: list[float]) -> float:
  """Two-sided p of a paired t-test on 3 differences (2 degrees of freedom), by hand:
  the t(2) CDF is F(t) = 1/2 + t / (2 sqrt(t^2 + 2)), so p = 1 - |t| / sqrt(t^2 + 2)."""
  d = np.asarray(d)
  t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
  return 1 - abs(t) / math.sqrt(t * t + 2)


# ----------------------------------------------------------------------------- AUBC


def test_aubc_hand_computed(tmp_path):
  # R = 3, x_r = r / 3. Seed 0 means (0.2, 0.4, 0.6, 0.5): trapezoids of width 1/3,
  # (1/3)((0.2+0.4)/2 + (0.4+0.6)/2 + (0.6+0.5)/2) = (1/3)(0.30 + 0.50 + 0.55) = 0.45.
  # Seed 1 (0.3, 0.5, 0.7, 0.6): (1/3)(0.40 + 0.60 + 0.65) = 0.55.
  # Mean 0.50, SD sqrt((0.05^2 + 0.05^2) / 1) = 0.0707 -> "50.00 ± 7.07".
  _run(tmp_path, "rand", 0, [0.2, 0.4, 0.6, 0.5])
  _run(tmp_path, "rand", 1, [0.3, 0.5, 0.7, 0.6])
  _run(tmp_path, "rand", 2, [0.9, 0.9, 0.9, 0.9], complete=False)  # incomplete: no AUBC
  _run(tmp_path, "entropy", 0, [0.2, 0.2, 0.2])  # stops at r = 2 < R: no AUBC
  write_report(tmp_path)
  got = {(r["method"], r["seed"]): float(r["aubc_pct"]) for r in _csv(tmp_path / "report_aubc.csv")}
  assert got == {
    ("RAND", "0"): pytest.approx(45.0, abs=1e-9),
    ("RAND", "1"): pytest.approx(55.0, abs=1e-9),
  }
  rows = _md_table((tmp_path / "report.md").read_text(), "#### AUBC and final Dice")
  assert rows[0] == ["Methods", "Seeds (AUBC)", "AUBC", "Final Dice (r=3)"]
  # Final Dice over all three RAND seeds at r = 3: (0.5, 0.6, 0.9), mean 0.6667,
  # SD sqrt((0.1667^2 + 0.0667^2 + 0.2333^2) / 2) = 0.2082.
  assert rows[1] == ["RAND", "2", "**50.00** ± 7.07", "**66.67** ± 20.82"]
  assert rows[2] == ["ENPY", "0", "", ""]


# ------------------------------------------------------------------------------ PPM


def test_holm_step_down_hand_worked():
  # m = 4, alpha = 0.05. Sorted: 0.005 < 0.05/4 = 0.0125 reject; 0.01 < 0.05/3 = 0.0167
  # reject; 0.03 < 0.05/2 = 0.025 fails, so 0.03 and 0.04 stay (step-down stops).
  assert holm_reject([0.01, 0.04, 0.03, 0.005]).tolist() == [True, False, False, True]
  # m = 2: 0.01 < 0.025 reject; 0.04 < 0.05 reject.
  assert holm_reject([0.04, 0.01]).tolist() == [True, True]
  # 0.02 is the smallest of 3 but not below 0.05/3: nothing is rejected.
  assert holm_reject([0.02, 0.5, 0.9]).tolist() == [False, False, False]
  assert holm_reject([]).tolist() == []


# Three methods x three seeds x two budgets; each run has one test case, so a run's
# Dice is the number below. Round 0 is the same for all (it is not a PPM budget).
PPM_RUNS = {
  "rand": {1: (0.50, 0.60, 0.70), 2: (0.60, 0.70, 0.80)},
  "entropy": {1: (0.60, 0.71, 0.82), 2: (0.63, 0.74, 0.85)},
  "dkd_asd": {1: (0.51, 0.64, 0.77), 2: (0.62, 0.74, 0.86)},
}


def test_penalty_matrix_hand_computed(tmp_path):
  for strategy, by_round in PPM_RUNS.items():
    for seed in range(3):
      _run(tmp_path, strategy, seed, [0.3, by_round[1][seed], by_round[2][seed]])
  _run(tmp_path, "margin", 0, [0.3, 0.1, 0.1])  # one seed: never paired, no test
  write_report(tmp_path)
  # Paired differences (seeds 0, 1, 2) and their p = 1 - |t| / sqrt(t^2 + 2) (df 2):
  # r = 1: ENPY - RAND (.10, .11, .12): t = .11 / (.01 / sqrt 3) = 19.05, p = 0.0028
  #        DKD+ASD - RAND (.01, .04, .07): t = 2.309, p = 0.147
  #        ENPY - DKD+ASD (.09, .07, .05): t = 6.062, p = 0.0262
  # r = 2: ENPY - RAND (.03, .04, .05): t = 6.928, p = 0.0202
  #        DKD+ASD - RAND (.02, .04, .06): t = 3.464, p = 0.0742
  #        ENPY - DKD+ASD (.01, 0, -.01): t = 0, p = 1
  want = {
    (1, "ENPY", "RAND"): [0.10, 0.11, 0.12],
    (1, "DKD+ASD", "RAND"): [0.01, 0.04, 0.07],
    (1, "ENPY", "DKD+ASD"): [0.09, 0.07, 0.05],
    (2, "ENPY", "RAND"): [0.03, 0.04, 0.05],
    (2, "DKD+ASD", "RAND"): [0.02, 0.04, 0.06],
    (2, "ENPY", "DKD+ASD"): [0.01, 0.0, -0.01],
  }
  tests = _csv(tmp_path / "report_ppm.csv")
  assert len(tests) == len(want)  # MMAR (one seed) is in no test
  for t in tests:
    r, a, b = int(t["round"]), t["method_a"], t["method_b"]
    d = want[(r, a, b)] if (r, a, b) in want else [-x for x in want[(r, b, a)]]
    assert float(t["p"]) == pytest.approx(t2_p(d), rel=1e-6)
    x = [PPM_RUNS[{"RAND": "rand", "ENPY": "entropy", "DKD+ASD": "dkd_asd"}[m]][r] for m in (a, b)]
    assert float(t["p"]) == pytest.approx(scipy.stats.ttest_rel(*x).pvalue, rel=1e-9)
  # P[i, j] += 1/2 (two budgets) when row i's mean is significantly above column j's.
  # Raw (p < 0.05): r = 1 ENPY above RAND (p 0.0028) and ENPY above DKD+ASD (0.0262);
  # r = 2 ENPY above RAND (0.0202). So P[ENPY, RAND] = 1/2 + 1/2 = 1.00, P[ENPY,
  # DKD+ASD] = 0.50; RAND and DKD+ASD win nothing (their rows are 0). MMAR shares no 2
  # seeds with anyone: its row and column are n/a.
  # Average losses (column means over the 2 others each was tested against):
  # RAND (1.00 + 0.00) / 2 = 0.50, ENPY (0 + 0) / 2 = 0.00, DKD+ASD (0.50 + 0) / 2 = 0.25.
  # Holm per budget (3 tests): r = 1 sorted 0.0028 < 0.05/3 = 0.0167 keeps ENPY over RAND,
  # then 0.0262 is not below 0.05/2 = 0.025: ENPY over DKD+ASD goes. r = 2: 0.0202 is not
  # below 0.0167, so nothing. Holm: P[ENPY, RAND] = 0.50 only; averages RAND 0.25, ENPY
  # 0.00, DKD+ASD 0.00.
  md = (tmp_path / "report.md").read_text()
  raw = _md_table(md, "#### Pairwise penalty matrix\n")
  holm = _md_table(md, "#### Pairwise penalty matrix, Holm-corrected")
  head = ["Row beats column", "RAND", "ENPY", "MMAR", "DKD+ASD"]
  assert raw[0] == holm[0] == head
  assert raw[1:] == [
    ["RAND", "", "0.00", "n/a", "0.00"],
    ["ENPY", "1.00", "", "n/a", "0.50"],
    ["MMAR", "n/a", "n/a", "", "n/a"],
    ["DKD+ASD", "0.00", "0.00", "n/a", ""],
    ["Average losses", "0.50", "0.00", "n/a", "0.25"],
  ]
  assert holm[1:] == [
    ["RAND", "", "0.00", "n/a", "0.00"],
    ["ENPY", "0.50", "", "n/a", "0.00"],
    ["MMAR", "n/a", "n/a", "", "n/a"],
    ["DKD+ASD", "0.00", "0.00", "n/a", ""],
    ["Average losses", "0.25", "0.00", "n/a", "0.00"],
  ]
  # Ranking by raw average losses: ENPY 0.00, DKD+ASD 0.25, RAND 0.50; MMAR unranked.
  assert _md_table(md, "#### Ranking by average losses")[1:] == [
    ["1", "ENPY", "0.00", "0.00"],
    ["2", "DKD+ASD", "0.25", "0.00"],
    ["3", "RAND", "0.50", "0.25"],
    ["–", "MMAR", "n/a", "n/a"],
  ]
  # The credited winner of each significant test is the method with the higher mean.
  winners = {(t["round"], t["method_a"], t["method_b"]): t["winner"] for t in tests}
  assert sorted(w for w in winners.values() if w) == ["ENPY", "ENPY", "ENPY"]
  assert (tmp_path / "ppm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  # MMAR's single run: its SDs over n = 1 print "–" in md and csv, never "± 0.00".
  table1 = _md_table(md, "### Table 1 form: seeds as replicates")
  assert [c for c in table1 if c[0] == "MMAR"] == [["MMAR", "10.00 ± –", "10.00 ± –"]]
  for name in ("report.csv", "report_pooled.csv"):
    row = next(r for r in _csv(tmp_path / name) if r["Methods"] == "MMAR")
    assert row["5% (r=1)"] == row["10% (r=2)"] == "10.00 ± –"
  assert "± 0.00" not in md


# -------------------------------------------------------------------------- Table 8


def test_table8_pseudo_quality_on_a_made_up_round(tmp_path):
  # Round 1, seed 0: selected u1, u2 (0.9, 0.8); unselected u3, u4 (0.3, 0.2), u5 has
  # NaN Dice (left out), u6 was pseudo-labelled but has no ground truth (not scored).
  # Seed 1: selected v1 (0.7), unselected v2 (0.6). Pooled: selected (.9, .8, .7),
  # mean 0.8, SD 0.1; unselected (.3, .2, .6), mean 0.3667, SD 0.2082.
  # Every selected value beats every unselected one: U = 9 of 9, and the exact
  # two-sided p is 2 / C(6, 3) = 0.1.
  extra0 = {
    1: {
      "pseudo": ["u1", "u2", "u6"],
      "unlabeled_dice": {"u1": 0.9, "u2": 0.8, "u3": 0.3, "u4": 0.2, "u5": None},
    }
  }
  extra1 = {1: {"pseudo": ["v1"], "unlabeled_dice": {"v1": 0.7, "v2": 0.6}}}
  _run(tmp_path, "assft", 0, [0.3, 0.5], ssft=True, extra=extra0)
  _run(tmp_path, "assft", 1, [0.3, 0.5], ssft=True, extra=extra1)
  written = write_report(tmp_path)
  md = (tmp_path / "report.md").read_text()
  rows = _md_table(md, "### Table 8 and Fig. 5: pseudo-label quality")
  assert rows[1] == [
    "ASSFT",
    "5% (r=1)",
    "2",
    "80.00 ± 10.00 (n = 3)",
    "36.67 ± 20.82 (n = 3)",
    "1.00e-01",
  ]
  (row,) = _csv(tmp_path / "report_pseudo.csv")
  sel, uns = [0.9, 0.8, 0.7], [0.3, 0.2, 0.6]
  assert float(row["p"]) == pytest.approx(
    scipy.stats.mannwhitneyu(sel, uns, alternative="two-sided").pvalue, rel=1e-12
  )
  assert float(row["p"]) == pytest.approx(0.1, rel=1e-12)
  assert "pseudo_dice.png" in written and (tmp_path / "pseudo_dice.png").stat().st_size > 1000
  assert set(written) <= set(OUTPUTS)


def test_no_pseudo_rows_no_table8(tmp_path):
  _run(tmp_path, "rand", 0, [0.3, 0.5])
  (tmp_path / "pseudo_dice.png").write_bytes(b"stale")
  written = write_report(tmp_path)
  md = (tmp_path / "report.md").read_text()
  assert "Table 8" not in md and "pseudo_dice.png" not in written
  assert not (tmp_path / "pseudo_dice.png").exists()
  assert "Table 6" not in md and "Table 7" not in md and "ppm.png" not in written


# ------------------------------------------------------------------- budget keying


def test_budgets_are_kept_apart(tmp_path):
  # The same method and seeds at two per-round budgets: two sections, never pooled.
  for seed, (a, b) in enumerate([(0.40, 0.70), (0.50, 0.80)]):
    _run(tmp_path, "rand", seed, [0.3, a], budget="5%", per_round=2)
    _run(tmp_path, "rand", seed, [0.3, b], budget="10%", per_round=4)
  write_report(tmp_path)
  md = (tmp_path / "report.md").read_text()
  five = md.split("## Budget: --budget=5% (n_B = 2 cases per round)")[1].split("## Budget:")[0]
  ten = md.split("## Budget: --budget=10% (n_B = 4 cases per round)")[1]
  # 5%: seeds (0.40, 0.50) -> 45.00 ± 7.07; 10%: (0.70, 0.80) -> 75.00 ± 7.07.
  assert _md_table(five, "### Table 1 form: seeds as replicates")[1] == ["RAND", "**45.00** ± 7.07"]
  assert _md_table(ten, "### Table 1 form: seeds as replicates")[1] == ["RAND", "**75.00** ± 7.07"]
  rows = _csv(tmp_path / "report_long.csv")
  got = {(r["budget_per_round"], r["round"]): float(r["seed_mean_pct"]) for r in rows}
  assert got[("2", "1")] == pytest.approx(45.0) and got[("4", "1")] == pytest.approx(75.0)
  # Two runs of one method, budget and seed are no replicates: refused, naming both.
  _run(tmp_path, "random", 1, [0.3, 0.6], budget="5%", per_round=2, cell="again")
  with pytest.raises(ReportError, match="two runs of RAND, seed 1"):
    write_report(tmp_path)


# ------------------------------------------------------- names, controls, ablations


def test_controls_names_and_order(tmp_path):
  arms = [
    ("assft", True, None, "assft"),
    ("dkd_asd", False, None, "dkd_asd"),
    ("dkd_asd", False, "supervised", "dkd_asd+sup"),
    ("random", True, "pseudo", "rand+ssft"),
    ("random", False, "supervised", "rand+sup"),
    ("random", False, None, "rand"),
  ]
  # Final (r = 1) Dice: ASSFT 0.70/0.72, DKD+ASD 0.60/0.61, its matched control
  # 0.62/0.66, RAND+SSFT 0.65/0.66, RAND (matched) 0.55/0.57, RAND 0.50/0.52.
  final = {"assft": (0.70, 0.72), "dkd_asd": (0.60, 0.61), "dkd_asd+sup": (0.62, 0.66)}
  final |= {"rand+ssft": (0.65, 0.66), "rand+sup": (0.55, 0.57), "rand": (0.50, 0.52)}
  for strategy, ssft, stage3, cell in arms:
    for seed in (0, 1):
      _run(tmp_path, strategy, seed, [0.3, final[cell][seed]], ssft=ssft, stage3=stage3, cell=cell)
  write_report(tmp_path)
  md = (tmp_path / "report.md").read_text()
  table1 = _md_table(md, "### Table 1 form: seeds as replicates")
  assert [r[0] for r in table1[1:]] == [
    "RAND",
    "RAND (matched)",
    "RAND+SSFT",
    "DKD+ASD",
    "DKD+ASD (matched)",
    "ASSFT",
  ]
  intro = md.split("## What each comparison isolates")[1].split("## Budget")[0]
  assert "**ASSFT** vs **RAND+SSFT**: the query, with SSFT on both." in intro
  assert "**ASSFT** vs **DKD+ASD (matched)**: the pseudo-labels, at equal optimiser steps." in intro
  assert "**DKD+ASD** vs **RAND**: the query alone, without SSFT." in intro
  assert "**RAND+SSFT** vs **RAND (matched)**: SSFT, at equal optimiser steps." in intro
  controls = {r[0]: r for r in _md_table(md, "### Controls")[1:]}
  # ASSFT - DKD+ASD (matched): paired differences (0.08, 0.06): mean 7.00, SD 1.41.
  row = controls["ASSFT − DKD+ASD (matched)"]
  assert row[2] == "7.00 ± 1.41" and row[4] == "2"
  # 95 % interval: mean 7.00 ± t(0.975, df 1) * SD / sqrt(2) (t from its quantile function).
  half = scipy.stats.t.ppf(0.975, 1) * (100 * np.sqrt(2) * 0.01) / np.sqrt(2)
  assert row[3] == f"[{7.0 - half:.2f}, {7.0 + half:.2f}]"
  p = scipy.stats.ttest_rel([0.70, 0.72], [0.62, 0.66]).pvalue
  assert float(row[5]) == pytest.approx(p, rel=5e-3)  # printed with 3 significant digits
  # The paper's headline pair, ASSFT - RAND: (0.20, 0.20).
  assert controls["ASSFT − RAND"][2] == "20.00 ± 0.00" and controls["ASSFT − RAND"][4] == "2"
  # The same two at equal optimiser steps: ASSFT - RAND (matched) (0.15, 0.15), and the
  # query alone at ASSFT's steps, DKD+ASD (matched) - RAND (matched) (0.07, 0.09).
  assert controls["ASSFT − RAND (matched)"][2] == "15.00 ± 0.00"
  assert controls["DKD+ASD (matched) − RAND (matched)"][2] == "8.00 ± 1.41"
  assert "**ASSFT** vs **RAND (matched)**: the query and the pseudo-labels, at equal" in intro
  assert [r[0] for r in _md_table(md, "### Controls")[1:]] == [
    "ASSFT − RAND",
    "ASSFT − RAND (matched)",
    "ASSFT − RAND+SSFT",
    "ASSFT − DKD+ASD (matched)",
    "ASSFT − DKD+ASD",
    "DKD+ASD − RAND",
    "DKD+ASD (matched) − RAND (matched)",
    "RAND+SSFT − RAND (matched)",
  ]


def test_ablation_tables_6_and_7(tmp_path):
  base = {"rand": 0.50, "dkd": 0.60, "dkd_low": 0.40, "entropy": 0.55}
  base |= {"asd": 0.62, "asd_low": 0.42, "asd_tau1": 0.58, "asd_tau1_low": 0.44}
  for strategy, v in base.items():
    for seed in range(3):
      _run(tmp_path, strategy, seed, [0.3, v + 0.01 * seed, v + 0.1 + 0.02 * seed])
  write_report(tmp_path)
  md = (tmp_path / "report.md").read_text()
  t6 = _md_table(md, "### Table 6: the DKD metric")
  assert t6[0] == ["Methods", "5% (r=1)", "p vs RAND", "10% (r=2)", "p vs RAND"]
  assert [r[0] for r in t6[1:]] == ["RAND", "DKD", "Low DKD"]
  # DKD at r = 1: (0.60, 0.61, 0.62) -> 61.00 ± 1.00; its seeds all beat RAND's
  # (0.50, 0.51, 0.52), so U = 9 of 9 and the exact two-sided p is 2 / C(6, 3) = 0.1.
  assert t6[2][1:3] == ["61.00 ± 1.00", "1.00e-01"]
  assert t6[1][2] == t6[1][4] == ""  # RAND is not tested against itself
  want = scipy.stats.mannwhitneyu([0.40, 0.41, 0.42], [0.50, 0.51, 0.52]).pvalue
  assert float(t6[3][2]) == pytest.approx(want, rel=5e-3)
  t7 = _md_table(md, "### Table 7: the ASD metric")
  assert [r[:2] for r in t7[1:]] == [
    ["RAND", "–"],
    ["ENPY", "–"],
    ["ASD (τ=1)", "τ = 1"],
    ["Low ASD (τ=1)", "τ = 1"],
    ["ASD", "τ(r)"],
    ["Low ASD", "τ(r)"],
  ]
  # Low ASD (tau = 1) at r = 2: (0.54, 0.56, 0.58) -> 56.00 ± 2.00.
  assert t7[4][4] == "56.00 ± 2.00"
  # Contrasts. DKD - Low DKD at r = 2: (0.70, 0.72, 0.74) vs (0.50, 0.52, 0.54), 72 - 52
  # = 20.00, every DKD seed above every Low DKD seed: p = 2 / C(6, 3) = 0.1.
  six = md.split("### Table 6")[1].split("### Table 7")[0]
  assert _md_table(six, "own contrasts")[1] == [
    "DKD − Low DKD",
    "20.00 (p = 1.00e-01)",
    "20.00 (p = 1.00e-01)",
  ]
  # ASD - ASD (tau = 1) at r = 1: (0.62, 0.63, 0.64) vs (0.58, 0.59, 0.60): 4.00, p = 0.1.
  seven = _md_table(md.split("### Table 7")[1], "own contrasts")
  assert [r[0] for r in seven[1:]] == [
    "ASD − Low ASD",
    "ASD (τ=1) − Low ASD (τ=1)",
    "ASD − ENPY",
    "ASD − ASD (τ=1)",
  ]
  assert seven[4][1] == "4.00 (p = 1.00e-01)"


# ------------------------------------------------------------ what each method queried


def test_queried_cases_by_stratum(tmp_path):
  """The table of what each method queried by stratum, from a dataset.json 'cases' table:
  shares counted by hand; the default fields come from the runs' --stratify_by."""
  from assft_jax.data import DataError

  scanner = {"a1": "A", "a2": "A", "a3": "A", "b1": "B", "c1": "C", "t1": "A"}
  table = tmp_path / "data" / "dataset.json"
  table.parent.mkdir()
  table.write_text(json.dumps({"cases": {c: {"scanner": s} for c, s in scanner.items()}}))
  runs = tmp_path / "runs"
  queried = {  # per seed: round 0 (left out), round 1, round 2
    ("random", 0): (["a1"], ["a2"], ["b1"]),
    ("random", 1): (["a2"], ["a1"], ["a3"]),
    ("dkd_asd", 0): (["a1"], ["c1"], ["b1"]),
    ("dkd_asd", 1): (["a2"], ["c1"], ["a3"]),
  }
  for (strategy, seed), q in queried.items():
    extra = {r: {"queried": ids} for r, ids in enumerate(q)}
    _run(runs, strategy, seed, [0.3, 0.5, 0.6], extra=extra)
    wd = runs / strategy / "5pct" / f"seed_{seed}"
    pool = ["a1", "a2", "a3", "b1", "c1"] if seed == 0 else ["a1", "a2", "b1", "c1"]
    (wd / "split.json").write_text(json.dumps({"test": ["t1"], "pool": pool}))
    cfg = {"seed": seed, "al": {"budget": "5%"}, "data": {"stratify_by": ["scanner"]}}
    (wd / "config.json").write_text(json.dumps(cfg))
  write_report(runs, groups=table)
  rows = _md_table((runs / "report.md").read_text(), "### What each method queried, by scanner")
  assert rows[0] == ["Methods", "Cases", "A", "B", "C"]
  # Pool: seed 0 3/5 A, 1/5 B, 1/5 C; seed 1 2/4, 1/4, 1/4 -> means 55, 22.5, 22.5 %, 4.5 cases.
  assert rows[1] == ["Pool (mean over seeds)", "4.5", "55", "22", "22"]
  # RAND rounds 1-2: a2 b1 a1 a3 -> A 3, B 1; DKD+ASD: c1 b1 c1 a3 -> A 1, B 1, C 2.
  got = {r[0]: r[1:] for r in rows[2:]}
  assert got["RAND"] == ["4", "75", "25", "0"]
  assert got["DKD+ASD"] == ["4", "25", "25", "50"]
  # Without a dataset.json the section says how to get one; a case missing from the table
  # is one error naming the file and the case.
  write_report(runs)
  assert "pass --groups=PATH/dataset.json" in (runs / "report.md").read_text()
  del scanner["c1"]
  table.write_text(json.dumps({"cases": {c: {"scanner": s} for c, s in scanner.items()}}))
  with pytest.raises(DataError, match=r"dataset.json: case 'c1' has no scanner.*--groups"):
    write_report(runs, groups=table)


def test_the_report_names_the_kernel_and_the_rounds_whose_exclusion_was_lifted(tmp_path):
  lifted = {3: {"exclusion_lifted": True}}
  _run(tmp_path, "assft", 0, [0.2, 0.3, 0.4, 0.5], ssft=True, extra=lifted)
  _run(tmp_path, "assft", 1, [0.2, 0.3, 0.4, 0.5], ssft=True, extra=lifted)
  _run(tmp_path, "rand", 0, [0.2, 0.3, 0.4, 0.5])
  write_report(tmp_path)
  md = (tmp_path / "report.md").read_text()
  assert "was lifted for the query of" in md and "ASSFT round 3 (seeds 0, 1)" in md
  assert "RAND round" not in md
  assert "Conv kernel: not recorded (12 rounds)." in md


def test_pool_protocols_b_and_c_by_hand(tmp_path):
  """A pool of four cases, p4 without ground truth (null). Round 0 labels p1, round 1
  queries p2. (b): the cases not yet labeled; (c): every pool case.
  Seed 0, round 0 Dice p1..p3 = 0.1, 0.2, 0.3: (b) = mean(0.2, 0.3) = 0.25, (c) = 0.2;
  round 1 = 0.5, 0.6, 0.9: (b) = 0.9 (p3 only), (c) = mean(0.5, 0.6, 0.9) = 0.6667.
  Seed 1, round 1 = 0.3, 0.4, 0.5: (b) = 0.5, (c) = 0.4. Over seeds at round 1: (b) 70.00
  ± 28.28, (c) 53.33 ± 18.86. The bound runs score the same pool: the lower bound's (b) is
  every case with ground truth, the upper bound (all pool labeled) has no (b): empty."""
  rows = lambda r0, r1: {
    0: {"queried": ["p1"], "pool_dice_per_case": dict(zip(["p1", "p2", "p3", "p4"], r0))},
    1: {"queried": ["p2"], "pool_dice_per_case": dict(zip(["p1", "p2", "p3", "p4"], r1))},
  }
  _run(tmp_path, "rand", 0, [0.5, 0.6], extra=rows([0.1, 0.2, 0.3, None], [0.5, 0.6, 0.9, None]))
  _run(tmp_path, "rand", 1, [0.5, 0.6], extra=rows([0.1, 0.2, 0.3, None], [0.3, 0.4, 0.5, None]))
  pool = {"pool_dice_per_case": {"p1": 0.0, "p2": 0.2, "p3": 0.4, "p4": None}}
  _run(tmp_path, "lower_bound", 0, [0.1], extra={0: dict(pool, queried=[])})
  _run(tmp_path, "upper_bound", 0, [0.9], extra={0: dict(pool, queried=[])})
  write_report(tmp_path)
  md = (tmp_path / "report.md").read_text()
  b = _md_table(md, "## Protocol (b): the target-pool cases still unlabeled at that round")
  c = _md_table(md, "## Protocol (c): the whole target pool, queried cases included")
  # columns: Methods, lower bound, 5% (r=1), upper bound
  assert b[1] == ["RAND", "20.00 ± –", "**70.00** ± 28.28", ""]  # no unlabeled case
  assert c[1] == ["RAND", "20.00 ± –", "**53.33** ± 18.86", "20.00 ± –"]
  long = _csv(tmp_path / "report_protocols.csv")
  got = {(r["protocol"], r["round"]): float(r["seed_mean_pct"]) for r in long}
  assert got[("b", "0")] == pytest.approx(25.0) and got[("c", "0")] == pytest.approx(20.0)
  assert got[("b", "1")] == pytest.approx(70.0) and got[("c", "1")] == pytest.approx(
    53.3333, abs=1e-3
  )
