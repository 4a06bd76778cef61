"""The report on a synthetic sweep: table structure, bolding, pooling and p-values.

Every expected number is recomputed here from the per-case Dice the test itself wrote
(numpy for mean/SD, scipy.stats.mannwhitneyu for p-values), never copied from the code.
The nnActive evaluation, Tables 6-8 and budget keying are in test_report_eval.py.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from assft_jax.report import OUTPUTS, ReportError, display_name, write_report
from assft_jax.report.stats import ranks

# strategy -> Dice offset; ASSFT best, DKD+ASD second (at every budget).
OFFSETS = {"rand": 0.0, "entropy": 0.03, "dkd_asd": 0.08, "assft": 0.12}
SEEDS = (0, 1)
ROUNDS = 3
N_CASES = 9
CLASSES = ("liver", "spleen")


def _dice(strategy: str, seed: int, r: int) -> dict[str, float]:
  rng = np.random.default_rng([seed, r, sorted(OFFSETS).index(strategy)])
  base = 0.45 + 0.1 * r + OFFSETS[strategy]
  vals = np.clip(base + rng.normal(0, 0.05, N_CASES), 0, 1)
  return {f"s{seed}_case{i:02d}": float(v) for i, v in enumerate(vals)}


def _round(strategy, seed, r, n_labeled):
  d = _dice(strategy, seed, r)
  vals = np.array(list(d.values()))
  return {
    "round": r,
    "n_labeled": n_labeled,
    "queried": [f"q{seed}_{r}"],
    "pseudo": [],
    "dice_mean": float(vals.mean()),
    "dice_sd": float(vals.std()),
    "dice_per_case": d,
    "dice_per_class": {c: float(vals.mean() - 0.01 * k) for k, c in enumerate(CLASSES)},
  }


def _write(path: Path, summary: dict, budget: str | None = None) -> None:
  path.mkdir(parents=True, exist_ok=True)
  (path / "summary.json").write_text(json.dumps(summary))
  if budget is not None:  # the run's resolved config, as open_workdir writes it
    (path / "config.json").write_text(json.dumps({"seed": 0, "al": {"budget": budget}}))


def make_sweep(root: Path, slices: bool = True) -> None:
  for s in OFFSETS:
    for seed in SEEDS:
      wd = root / s / f"seed_{seed}"
      _write(
        wd,
        {
          "strategy": s,
          "ssft": s == "assft",
          "seed": seed,
          "complete": True,
          "budget_per_round": 2,
          "budget_label": ["init"] + [f"{5 * r}%" for r in range(1, ROUNDS + 1)],
          "lower_bound": None,
          "upper_bound": None,
          "rounds": [_round(s, seed, r, 1 + 2 * r) for r in range(ROUNDS + 1)],
        },
        budget="5%",
      )
      if slices and s in ("assft", "rand"):
        for r in (1, 2):
          rd = wd / f"round_{r:03d}"
          rd.mkdir()
          yy, xx = np.mgrid[:24, :24]
          lab = ((yy - 12) ** 2 + (xx - 12) ** 2 < 36).astype(np.int32)
          lab[2:6, 2:8] = 2
          arrays = {
            f"q{seed}_{r}/image": np.random.default_rng(r).normal(size=(24, 24)).astype(np.float32),
            f"q{seed}_{r}/pred": np.roll(lab, 2, axis=1),
          }
          if (s, r) != ("rand", 2):  # a case without ground truth on disk: pred only
            arrays[f"q{seed}_{r}/label"] = lab
          np.savez(rd / "query_slices.npz", **arrays)
  for kind, level in (("lower_bound", 0.02), ("upper_bound", 0.95)):
    for seed in SEEDS:
      d = {f"s{seed}_case{i:02d}": level + 0.001 * i for i in range(N_CASES)}
      _write(
        root / kind / f"seed_{seed}",
        {
          "strategy": kind,
          "ssft": False,
          "seed": seed,
          "complete": True,
          kind: float(np.mean(list(d.values()))),
          "rounds": [
            {
              "round": 0,
              "n_labeled": 40,
              "queried": [],
              "pseudo": [],
              "dice_mean": 0.0,
              "dice_sd": 0.0,
              "dice_per_case": d,
              "dice_per_class": {},
            }
          ],
        },
      )


def pooled(strategy: str, r: int) -> np.ndarray:
  return np.concatenate([list(_dice(strategy, k, r).values()) for k in SEEDS])


def seed_means(strategy: str, r: int) -> np.ndarray:
  return np.array([np.mean(list(_dice(strategy, k, r).values())) for k in SEEDS])


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  root = tmp_path_factory.mktemp("sweep")
  make_sweep(root)
  written = write_report(root)
  return root, written


def _read_csv(path: Path) -> list[list[str]]:
  with open(path, newline="") as f:
    return list(csv.reader(f))


def _md_table(md: str, heading: str) -> list[list[str]]:
  block = md.split(heading, 1)[1].strip().split("\n\n")[0]
  rows = [line.strip().strip("|").split("|") for line in block.splitlines()]
  return [[c.strip() for c in row] for row in rows if not set("".join(row)) <= set("-")]


BUDGET = "--budget=5% (n_B = 2 cases per round)"
NAME_OF = {display_name(s, s == "assft"): s for s in OFFSETS}


def test_csv_tables_seed_level_and_pooled(report):
  root, _ = report
  budgets = [f"{5 * r}% (r={r})" for r in range(1, ROUNDS + 1)]
  lo_case = np.array([0.02 + 0.001 * i for i in range(N_CASES)])
  for name, values, bound in (
    ("report.csv", seed_means, np.array([lo_case.mean()] * len(SEEDS))),
    ("report_pooled.csv", pooled, np.concatenate([lo_case] * len(SEEDS))),
  ):
    rows = _read_csv(root / name)
    assert rows[0] == ["Budget", "Methods", "Lower Bound 0%", *budgets, "Upper Bound 100%"]
    assert [r[1] for r in rows[1:]] == ["RAND", "ENPY", "DKD+ASD", "ASSFT"]
    for row in rows[1:]:
      assert row[0] == BUDGET
      # Two bound seeds with the same values: a real SD of 0 over n = 2 (not n = 1).
      assert row[2] == f"{100 * bound.mean():.2f} ± {100 * bound.std(ddof=1):.2f}"
      for r in range(1, ROUNDS + 1):
        x = values(NAME_OF[row[1]], r)
        mean, sd = row[2 + r].replace("*", "").split(" ± ")
        assert (mean, sd) == (f"{100 * x.mean():.2f}", f"{100 * x.std(ddof=1):.2f}"), name


def test_pvalues_match_scipy_and_stars(report):
  root, _ = report
  long = _read_csv(root / "report_long.csv")
  head, body = long[0], long[1:]
  col = {k: i for i, k in enumerate(head)}
  wide = {
    name: {x[1]: x for x in _read_csv(root / name)} for name in ("report.csv", "report_pooled.csv")
  }
  checked = 0
  for row in body:
    m, r = row[col["method"]], int(row[col["round"]])
    if m == "ASSFT":
      assert row[col["p_vs_ASSFT_pooled"]] == row[col["p_vs_ASSFT_seeds"]] == ""
      continue
    for kind, values, name in (
      ("pooled", pooled, "report_pooled.csv"),
      ("seeds", seed_means, "report.csv"),
    ):
      want = scipy.stats.mannwhitneyu(
        values(NAME_OF[m], r), values("assft", r), alternative="two-sided"
      ).pvalue
      assert float(row[col[f"p_vs_ASSFT_{kind}"]]) == pytest.approx(want, rel=1e-12)
      if r >= 1:  # the wide tables: '*' exactly when p < 0.01
        assert wide[name][m][2 + r].split(" ± ")[0].endswith("*") == (want < 0.01)
    checked += 1
  assert checked == 3 * (ROUNDS + 1)


def test_markdown_bolds_best_and_underlines_second(report):
  root, _ = report
  md = (root / "report.md").read_text()
  assert f"## Budget: {BUDGET}" in md
  for heading, values in (
    ("### Table 1 form: seeds as replicates", seed_means),
    ("### Table 1 form, pooled per case", pooled),
  ):
    rows = _md_table(md, heading)
    for j in range(2, 2 + ROUNDS):
      means = {row[0]: values(NAME_OF[row[0]], j - 1).mean() for row in rows[1:]}
      order = sorted(means, key=means.get, reverse=True)
      for row in rows[1:]:
        cell = row[j]
        assert cell.startswith("**") == (row[0] == order[0]), cell
        assert cell.startswith("<u>") == (row[0] == order[1]), cell
  assert "## Per-class Dice" in md and "liver" in md and "spleen" in md
  assert "![Queried cases](queries.png)" in md and "Skipped montage inputs" not in md


def test_per_class_csv(report):
  root, _ = report
  rows = _read_csv(root / "report_per_class.csv")
  col = {k: i for i, k in enumerate(rows[0])}
  got = {
    (r[col["method"]], int(r[col["round"]]), r[col["class"]]): float(r[col["dice_mean_pct"]])
    for r in rows[1:]
  }
  vals = [np.mean(list(_dice("rand", k, 2).values())) - 0.01 for k in SEEDS]
  assert got[("RAND", 2, "spleen")] == pytest.approx(100 * np.mean(vals), rel=1e-12)


def test_pngs_are_valid(report):
  root, written = report
  import matplotlib.image

  assert set(written) <= set(OUTPUTS)
  for name in ("dice_vs_budget.png", "ppm.png", "queries.png"):
    assert written[name] == root / name
    data = (root / name).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(root / name)
    assert img.ndim == 3 and min(img.shape[:2]) > 100


def test_without_query_slices_montage_is_skipped_with_note(tmp_path):
  make_sweep(tmp_path, slices=False)
  bad = tmp_path / "rand" / "seed_0" / "round_001"
  bad.mkdir()
  (bad / "query_slices.npz").write_bytes(b"not a zip")
  (tmp_path / "queries.png").write_bytes(b"a stale montage of an earlier report")
  written = write_report(tmp_path)
  assert "queries.png" not in written and not (tmp_path / "queries.png").exists()
  md = (tmp_path / "report.md").read_text()
  assert "No readable `round_XXX/query_slices.npz` found" in md
  assert f"{bad / 'query_slices.npz'}: unreadable" in md


def test_empty_dir_and_bad_summary_give_clear_errors(tmp_path):
  with pytest.raises(ReportError, match="no runs found"):
    write_report(tmp_path)
  bad = tmp_path / "rand" / "seed_0"
  bad.mkdir(parents=True)
  (bad / "summary.json").write_text('{"strategy": "rand", "seed": 0, "rounds": [{"round": 1}]}')
  with pytest.raises(ReportError, match=re.escape(str(bad / "summary.json")) + ".*n_labeled"):
    write_report(tmp_path)
  (bad / "summary.json").write_text(
    json.dumps(
      {
        "strategy": "rand",
        "seed": 0,
        "rounds": [{"round": 1, "n_labeled": 2, "dice_per_case": {"a": 73.1}}],
      }
    )
  )
  with pytest.raises(ReportError, match="outside"):
    write_report(tmp_path)


def test_ranks_share_ties_at_shown_precision():
  assert ranks({"a": 0.80001, "b": 0.80, "c": 0.79, "d": 0.5}) == {"a": 1, "b": 1, "c": 2, "d": 0}
  assert ranks({"a": 0.7}) == {"a": 1}
  assert ranks({"a": 0.0, "b": 0.00001}) == {"a": 0, "b": 0}


def test_display_names():
  assert display_name("assft", True) == "ASSFT"
  assert display_name("dkd_asd", True) == "ASSFT"
  assert display_name("assft", False) == "DKD+ASD"
  assert display_name("fg_random", False) == "FG-RAND"
  assert display_name("dkd_asd", False) == "DKD+ASD"
  assert display_name("coreset", False) == "Core-set"
  assert display_name("rand", True) == "RAND+SSFT"
  assert display_name("my_new", False) == "my_new"
  assert display_name("dkd_asd", False, "supervised") == "DKD+ASD (matched)"
  assert display_name("random", False, "supervised") == "RAND (matched)"
  assert display_name("asd_tau1_low", False) == "Low ASD (τ=1)"
  assert display_name("rand", True, "pseudo") == "RAND+SSFT"


def test_incomplete_runs_nan_cases_and_no_reference(tmp_path):
  d0 = {"a": 0.5, "b": 0.7, "c": None}  # None: Dice undefined, must be dropped
  d1 = {"a": 0.6, "b": 0.9}
  for seed, (d, complete, n_rounds) in enumerate([(d0, True, 3), (d1, False, 2)]):
    _write(
      tmp_path / "rand" / f"seed_{seed}",
      {
        "strategy": "rand",
        "ssft": False,
        "seed": seed,
        "complete": complete,
        "rounds": [
          {"round": r, "n_labeled": 1 + 3 * r, "dice_per_case": d, "dice_per_class": {}}
          for r in range(n_rounds)
        ],
      },
    )
  write_report(tmp_path, include_init=True)
  md = (tmp_path / "report.md").read_text()
  assert "No ASSFT runs at this budget" in md and "Mann–Whitney" not in md.split("## Runs")[0]
  assert "1 of 1 runs are not complete" not in md and "1 of 2 runs are not complete" in md
  rows = _read_csv(tmp_path / "report_pooled.csv")
  assert rows[0] == ["Budget", "Methods", "n=1 (r=0)", "n=4 (r=1)", "n=7 (r=2)"]
  both = np.array([0.5, 0.7, 0.6, 0.9])
  assert rows[1][2] == f"{100 * both.mean():.2f} ± {100 * both.std(ddof=1):.2f}"
  only0 = np.array([0.5, 0.7])
  assert rows[1][4] == f"{100 * only0.mean():.2f} ± {100 * only0.std(ddof=1):.2f}"
  # Seed level at r = 2: only seed 0 reached it, so its SD over n = 1 is "–".
  seeds = _read_csv(tmp_path / "report.csv")
  assert seeds[1][4] == f"{100 * only0.mean():.2f} ± –"
  long = _read_csv(tmp_path / "report_long.csv")
  col = {k: i for i, k in enumerate(long[0])}
  assert [(r[col["n_values"]], r[col["n_seeds"]], r[col["n_nan"]]) for r in long[1:]] == [
    ("4", "2", "1"),
    ("4", "2", "1"),
    ("2", "1", "1"),
  ]
  seed_means = np.array([0.6, 0.75])
  assert float(long[1][col["seed_sd_pct"]]) == pytest.approx(100 * seed_means.std(ddof=1))


def test_pvalue_seed_counts_follow_each_budget(tmp_path):
  """A run still going counts only at the budgets it has finished: the p-value table's
  seed column must say so, not count every run of the method."""
  make_sweep(tmp_path, slices=False)
  path = tmp_path / "assft" / "seed_1" / "summary.json"
  d = json.loads(path.read_text())
  d["complete"], d["rounds"] = False, d["rounds"][:2]  # r = 0, 1 done; 2, 3 not yet
  path.write_text(json.dumps(d))
  write_report(tmp_path)
  md = (tmp_path / "report.md").read_text()
  rows = _md_table(md, "#### Mann–Whitney U p-values against ASSFT, seeds as replicates")
  assert rows[0][:2] == ["Methods", "Seeds per budget"]
  counts = {r[0]: r[1] for r in rows[1:]}
  assert counts == {"RAND": "2", "ENPY": "2", "DKD+ASD": "2", "ASSFT": "2/1/1"}
