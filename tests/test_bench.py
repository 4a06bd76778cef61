"""The benchmark dispatcher on a stub section: table printing, JSON writing, the meaning
of every "ratio" key. No timing is asserted (the stub's times are made up)."""

import json
import math
import sys
import types

import pytest

from experiments import bench


def _stub(rows):
  mod = types.ModuleType("experiments.benchmarks.stub")
  mod.run = lambda quick: [dict(r, quick=quick) for r in rows]
  return mod


ROWS = [
  {
    "name": "forward tiny",
    "jax_s": 0.3,
    "ref": "monai",
    "ref_s": 0.2,
    "ratio": 0.3 / 0.2,
    "gflops": 12.5,
  },
  {"name": "no reference", "jax_s": 1.5, "note": "jax only"},
  {"name": "skipped cell", "jax_s": float("nan"), "note": "skipped"},
  {"name": "scaled", "jax_s": 0.04, "ref": "1 device", "ref_s": 0.05, "ratio": 0.8, "devices": 2},
]


@pytest.fixture
def stub_section(monkeypatch):
  monkeypatch.setitem(sys.modules, "experiments.benchmarks.model", _stub(ROWS))
  monkeypatch.setitem(sys.modules, "experiments.benchmarks.scaling", _stub(ROWS[3:]))


def test_table_and_json(stub_section, tmp_path, capsys):
  out = tmp_path / "bench.json"
  rows = bench.bench(["model", "scaling"], quick=True, json_path=str(out))
  printed = capsys.readouterr().out
  for r in ROWS:
    assert r["name"] in printed
  assert "ratio" in printed.splitlines()[1]  # header row of the first table
  data = json.loads(out.read_text())  # strict JSON: NaN was written as null
  assert data["quick"] is True and data["sections"] == ["model", "scaling"]
  assert [r["name"] for r in data["rows"]] == [r["name"] for r in rows]
  assert [r["section"] for r in data["rows"]] == ["model"] * 4 + ["scaling"]
  assert data["rows"][2]["jax_s"] is None
  n_ratio = 0
  for r in data["rows"]:
    for k in (k for k in r if "ratio" in k):
      n_ratio += 1
      assert math.isclose(r[k], r["jax_s"] / r["ref_s"], rel_tol=1e-12)
  assert n_ratio == 3
  assert not list(tmp_path.glob("*.tmp"))


def test_inconsistent_ratio_is_refused(monkeypatch, tmp_path):
  bad = [{"name": "bad", "jax_s": 1.0, "ref_s": 2.0, "ratio": 2.0}]
  monkeypatch.setitem(sys.modules, "experiments.benchmarks.model", _stub(bad))
  with pytest.raises(bench.BenchError, match="'bad': ratio=2.0 is not jax_s/ref_s"):
    bench.bench(["model"], quick=True, json_path=str(tmp_path / "x.json"))
  assert not (tmp_path / "x.json").exists()


def test_ratio_without_reference_is_refused():
  with pytest.raises(bench.BenchError, match="peak_ratio"):
    bench.check_rows([{"name": "mem", "jax_s": float("nan"), "peak_ratio": 1.0}])


def test_scores_section_alternates_and_reports_spread():
  """`scores` is a section of `all`; its timer calls the two contenders alternately (one
  warm-up each, then REPEATS >= 5 pairs) and reports the medians, the min and max of each
  and ratio = jax_s / ref_s. The contenders are stubs: the times are not checked."""
  from experiments.benchmarks import scores

  assert "scores" in bench.SECTIONS and scores.REPEATS >= 5
  calls = []
  row = scores.interleaved("stub", lambda: calls.append("jax"), "ref", lambda: calls.append("ref"))
  assert calls == ["jax", "ref"] * (1 + scores.REPEATS)
  for who in ("jax", "ref"):
    assert row[f"{who}_min"] <= row[f"{who}_s"] <= row[f"{who}_max"]
  assert row["repeats"] == scores.REPEATS and row["ref"] == "ref"
  bench.check_rows([row])  # ratio is jax_s / ref_s
