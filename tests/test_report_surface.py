"""HD95 and NSD from evaluation to the report: made-up per-class values -> evaluate's
`summarize` -> the loop's summary row -> summary.json -> report.md and report_surface.csv.
Every expected number is recomputed here with numpy from the values the test wrote."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from assft_jax.engine.evaluate import summarize
from assft_jax.loop import _result_row
from assft_jax.report import ReportError, write_report

CLASSES = ["background", "liver", "spleen"]
IDS = [f"c{i}" for i in range(5)]


def per_class(seed: int, method: int, r: int) -> dict[str, np.ndarray]:
  """[cases, classes] Dice / HD95 / NSD, with NaN where a class is excluded."""
  rng = np.random.default_rng([seed, method, r])
  dice = rng.uniform(0.5, 0.9, (5, 2))
  hd95 = rng.uniform(2.0, 9.0, (5, 2)) + 3 * method
  nsd = rng.uniform(0.4, 0.95, (5, 2))
  hd95[0, 1] = np.nan  # one-sided: Dice 0, NSD 0, HD95 undefined
  dice[0, 1] = nsd[0, 1] = 0.0
  dice[4, :] = hd95[4, :] = nsd[4, :] = np.nan  # both classes absent from case c4
  return {"dice": dice, "hd95": hd95, "nsd": nsd}


def evaluated(v: dict[str, np.ndarray]) -> dict:
  """What engine.evaluate returns for these values (with nsd_tolerance_mm=2)."""
  out = summarize(v["dice"], IDS, CLASSES)
  out["hd95"] = summarize(v["hd95"], IDS, CLASSES, "hd95")
  out["hd95"]["n_one_sided"] = 1
  out["nsd"] = summarize(v["nsd"], IDS, CLASSES, "nsd")
  out["nsd"]["tolerance_mm"] = 2.0
  return out


def test_result_row_carries_hd95_and_nsd_beside_dice():
  v = per_class(0, 0, 1)
  row = json.loads(json.dumps(_result_row(evaluated(v))))  # as summary.json holds it
  for metric in ("dice", "hd95", "nsd"):
    case_means = [float(np.nanmean(x)) for x in v[metric][:4]]
    assert row[f"{metric}_mean"] == pytest.approx(np.mean(case_means), rel=1e-12)
    assert row[f"{metric}_sd"] == pytest.approx(np.std(case_means, ddof=1), rel=1e-12)
    assert row[f"{metric}_per_case"]["c4"] is None
    assert row[f"{metric}_per_case"]["c0"] == pytest.approx(case_means[0], rel=1e-12)
    spleen = float(np.nanmean(v[metric][:, 1]))
    assert row[f"{metric}_per_class"]["spleen"] == pytest.approx(spleen, rel=1e-12)
  # HD95's case c0 is its liver alone (spleen undefined), Dice's the mean with the 0.
  assert row["hd95_per_case"]["c0"] == pytest.approx(v["hd95"][0, 0], rel=1e-12)
  assert row["hd95_one_sided"] == 1 and row["nsd_tolerance_mm"] == 2.0


def write_sweep(root, with_surface: bool = True) -> None:
  for m, strategy in enumerate(("rand", "assft")):
    for seed in (0, 1, 2):
      rows = []
      for r in (0, 1):
        row = _result_row(evaluated(per_class(seed, m, r)))
        if not with_surface:
          row = {k: v for k, v in row.items() if k.startswith("dice")}
        rows.append({"round": r, "n_labeled": 1 + r, "queried": [], "pseudo": [], **row})
      wd = root / strategy / f"seed_{seed}"
      wd.mkdir(parents=True)
      summary = {"strategy": strategy, "ssft": m == 1, "seed": seed, "complete": True}
      summary |= {"budget": "2", "budget_per_round": 2, "rounds": rows}
      (wd / "summary.json").write_text(json.dumps(summary))


def run_value(seed: int, m: int, metric: str) -> float:
  """A run's value at round 1: the mean over cases of their class means, NaN left out."""
  case_means = [np.nanmean(x) for x in per_class(seed, m, 1)[metric] if not np.isnan(x).all()]
  return float(np.mean(case_means))


def test_report_shows_hd95_and_nsd_over_seeds(tmp_path):
  write_sweep(tmp_path)
  write_report(tmp_path)
  with open(tmp_path / "report_surface.csv") as f:
    got = {(r["method"], r["round"]): r for r in csv.DictReader(f)}
  md = (tmp_path / "report.md").read_text()
  assert "### Surface metrics: seeds as replicates" in md and "NSD × 100 at 2 mm" in md
  for m, method in enumerate(("RAND", "ASSFT")):
    hd = np.array([run_value(s, m, "hd95") for s in (0, 1, 2)])
    nsd = np.array([run_value(s, m, "nsd") for s in (0, 1, 2)])
    row = got[(method, "1")]
    assert row["n_seeds"] == "3" and row["nsd_tolerance_mm"] == "2"
    np.testing.assert_allclose(float(row["hd95_mean_mm"]), hd.mean(), rtol=1e-12)
    np.testing.assert_allclose(float(row["hd95_sd_mm"]), np.std(hd, ddof=1), rtol=1e-12)
    np.testing.assert_allclose(float(row["nsd_mean_pct"]), 100 * nsd.mean(), rtol=1e-12)
    np.testing.assert_allclose(float(row["nsd_sd_pct"]), 100 * np.std(nsd, ddof=1), rtol=1e-12)
    table = md.split("### Surface metrics")[1].split("###")[0]
    line = next(x for x in table.splitlines() if x.startswith(f"| {method} |"))
    assert [c.strip() for c in line.strip("|").split("|")] == [
      method,
      f"{hd.mean():.2f} ± {np.std(hd, ddof=1):.2f}",
      f"{100 * nsd.mean():.2f} ± {100 * np.std(nsd, ddof=1):.2f}",
    ]


def test_old_summaries_without_surface_metrics_still_report(tmp_path):
  write_sweep(tmp_path, with_surface=False)
  write_report(tmp_path)
  assert "Surface metrics" not in (tmp_path / "report.md").read_text()
  rows = list(csv.reader(open(tmp_path / "report_surface.csv")))
  assert rows[0][:3] == ["budget", "method", "round"] and len(rows) == 1


def test_a_negative_hd95_names_the_file(tmp_path):
  write_sweep(tmp_path)
  path = tmp_path / "rand" / "seed_0" / "summary.json"
  d = json.loads(path.read_text())
  d["rounds"][1]["hd95_per_case"]["c1"] = -1.0
  path.write_text(json.dumps(d))
  with pytest.raises(ReportError, match=r"summary.json: rounds\[1\].hd95_per_case\['c1'\] = -1"):
    write_report(tmp_path)
