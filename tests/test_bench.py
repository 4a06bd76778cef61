"""The benchmark dispatcher on a stub section: table printing, JSON writing, the meaning
of every "ratio" key; the shared timer on a fake clock and its statistics against
hand-derived values; the quick path of the sections at tiny sizes (model and ops are
`slow`; engine and scaling spawn processes and are left to `python -m experiments.bench
engine --quick`). No timing is asserted: the measured times are only ordered (min <=
median <= max)."""

import json
import math
import sys
import types

import pytest

from experiments import bench
from experiments.benchmarks import timing
from experiments.benchmarks.timing import Sample


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


class FakeClock:
  """A clock that moves only when a contender runs: each call of a contender advances it
  by that contender's next made-up duration, and `calls` records the order."""

  def __init__(self, durations: dict[str, list[float]]):
    self.now, self.calls = 0.0, []
    self.left = {k: list(v) for k, v in durations.items()}

  def __call__(self) -> float:
    return self.now

  def fn(self, name: str):
    def call():
      self.calls.append(name)
      self.now += self.left[name].pop(0)

    return call


def test_interleaved_is_round_robin_after_a_warm_up():
  """One warm-up call each (its time is `first`, not a repeat), then 3 rounds of one call
  of each contender in turn; the times are the durations the clock was moved by."""
  clock = FakeClock({"jax": [9.0, 1.0, 2.0, 3.0], "ref": [8.0, 4.0, 5.0, 6.0]})
  times, first = timing.interleaved(
    {"jax": clock.fn("jax"), "ref": clock.fn("ref")}, repeats=3, clock=clock
  )
  assert clock.calls == ["jax", "ref"] * 4
  assert first == {"jax": 9.0, "ref": 8.0}
  assert times == {"jax": [1.0, 2.0, 3.0], "ref": [4.0, 5.0, 6.0]}


def test_a_failed_computation_is_raised_not_timed():
  """A contender whose result fails when waited on (as an out-of-memory XLA computation
  does at block_until_ready) stops the bench with that error instead of giving a time."""

  class Failed:
    def block_until_ready(self):
      raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 45252049424 bytes.")

  with pytest.raises(RuntimeError, match="Out of memory"):
    timing.interleaved({"jax": Failed, "ref": lambda: 1.0}, repeats=1)
  # results that are not JAX arrays (a torch tensor, a float) still pass through
  assert timing.block({"loss": 1.0, "n": [2, 3]}) == {"loss": 1.0, "n": [2, 3]}


def test_merge_gives_median_min_max_ratio_of_medians_and_the_pass_spread():
  """Hand-derived. jax: pass 1 [1, 2, 3, 4, 5], pass 2 [3, 3, 3, 3, 10]; pooled sorted
  [1, 2, 3, 3, 3, 3, 3, 4, 5, 10]: median (3 + 3) / 2 = 3, min 1, max 10. ref: pass 1
  five 2s, pass 2 five 1s: median (1 + 2) / 2 = 1.5, min 1, max 2. ratio = 3 / 1.5 = 2.
  Pass 1: medians 3 and 2, ratio 1.5; pass 2: medians 3 and 1, ratio 3; spread 1.5.
  gflops = 6e9 flops / 3 s / 1e9 = 2; ref_gflops = 6 / 1.5 = 4. The extras are pass 1's."""
  p1 = Sample("op", [1.0, 2.0, 3.0, 4.0, 5.0], "torch", [2.0] * 5, 6e9, {"first_call_s": 7.0})
  p2 = Sample("op", [3.0, 3.0, 3.0, 3.0, 10.0], "torch", [1.0] * 5, 6e9, {"first_call_s": 0.5})
  solo = [Sample("alone", [4.0, 1.0, 2.0]), Sample("alone", [8.0, 9.0, 7.0])]
  row, alone = timing.merge([[p1, solo[0]], [p2, solo[1]]])
  assert row == {
    "name": "op",
    **{"jax_s": 3.0, "jax_min": 1.0, "jax_max": 10.0},
    **{"ref": "torch", "ref_s": 1.5, "ref_min": 1.0, "ref_max": 2.0, "ratio": 2.0},
    **{"jax_s_p1": 3.0, "ref_s_p1": 2.0, "ratio_p1": 1.5},
    **{"jax_s_p2": 3.0, "ref_s_p2": 1.0, "ratio_p2": 3.0, "spread": 1.5},
    **{"gflops": 2.0, "ref_gflops": 4.0, "repeats": 5, "passes": 2, "first_call_s": 7.0},
  }
  # jax alone: pooled [4, 1, 2, 8, 9, 7] -> median (4 + 7) / 2 = 5.5; pass medians 2 and 8
  assert alone == {
    **{"name": "alone", "jax_s": 5.5, "jax_min": 1.0, "jax_max": 9.0},
    **{"jax_s_p1": 2.0, "jax_s_p2": 8.0, "repeats": 3, "passes": 2},
  }
  bench.check_rows([row, alone])  # every ratio key is jax_s<suffix> / ref_s<suffix>
  (nan_row,) = timing.merge([[Sample("skip", ())]] * 2)  # a skipped cell: no times, NaN
  assert all(math.isnan(nan_row[k]) for k in ("jax_s", "jax_min", "jax_max"))


def test_merge_refuses_passes_of_other_rows():
  with pytest.raises(ValueError, match="different rows"):
    timing.merge([[Sample("a", [1.0])], [Sample("b", [1.0])]])


def test_a_pass_ratio_must_match_its_pass_medians():
  row = {"name": "r", "jax_s": 1.0, "ref_s": 2.0, "ratio": 0.5}
  bench.check_rows([dict(row, jax_s_p1=3.0, ref_s_p1=2.0, ratio_p1=1.5)])
  with pytest.raises(bench.BenchError, match="ratio_p1=0.5 is not jax_s_p1/ref_s_p1"):
    bench.check_rows([dict(row, jax_s_p1=3.0, ref_s_p1=2.0, ratio_p1=0.5)])


def test_table_shows_both_pass_ratios_and_the_spread_not_the_pass_medians(capsys):
  p = [[Sample("op", [2.0] * 5, "ref", [1.0] * 5)], [Sample("op", [3.0] * 5, "ref", [1.0] * 5)]]
  bench.print_table(timing.merge(p))
  header = capsys.readouterr().out.splitlines()[0].split()
  assert header[:9] == [
    *("name", "jax_s", "jax_min", "jax_max", "ref", "ref_s", "ref_min", "ref_max", "ratio")
  ]
  assert header[9:12] == ["ratio_p1", "ratio_p2", "spread"]
  assert not any(c.startswith(("jax_s_p", "ref_s_p")) for c in header)


def _check_timed(rows: list[dict], names: list[str]) -> None:
  """The rows a section's quick path returned: both passes, min <= median <= max, the two
  pass ratios and spread = |ratio_p1 - ratio_p2|; a skipped cell has a note and NaN."""
  assert [r["name"] for r in rows] == names
  for r in rows:
    if math.isnan(r["jax_s"]):
      assert r["note"].startswith("skipped") and "ref" not in r
      continue
    assert r["passes"] == 2 and r["repeats"] >= 2
    assert r["jax_min"] <= r["jax_s"] <= r["jax_max"]
    if "ref" in r:
      assert r["ref_min"] <= r["ref_s"] <= r["ref_max"]
      assert math.isclose(r["spread"], abs(r["ratio_p1"] - r["ratio_p2"]), rel_tol=1e-12)


def test_scores_quick_path_runs(monkeypatch, capsys):
  from experiments.benchmarks import scores

  monkeypatch.setattr(scores, "QUICK_SIZES", (64, 8, 4))
  rows = bench.bench(["scores"], quick=True)
  size = "N=64 F=8"
  _check_timed(
    rows,
    [f"pakd {size}", f"pd {size}", f"dkd {size}", f"D {size} to 4 anchors"]
    + [f"dkd 3 runs {size} (vmap)"],
  )
  assert all(r["repeats"] == timing.REPEATS >= 5 for r in rows)
  assert "spread" in capsys.readouterr().out


@pytest.mark.slow
def test_model_quick_path_runs_and_skips_native_alike_in_both_passes(monkeypatch):
  """A 2-level net at 16^3, two configs; a budget of 0 s skips native at the second
  config (the first always runs it) in both passes. 12 compiles, hence slow."""
  from experiments.benchmarks import model

  monkeypatch.setattr(model, "ARCH", dict(in_channels=1, out_channels=2, blocks_down=(1, 1)))
  monkeypatch.setattr(model, "QUICK_CONFIGS", [(4, 16), (8, 16)])
  monkeypatch.setattr(model, "NATIVE_BUDGET_S", 0.0)
  rows = bench.bench(["model"], quick=True)
  names = [
    f"{op} if{f} 16^3 {impl}"
    for f in (4, 8)
    for op in ("forward", "train_step")
    for impl in ("s2d", "native")
  ]
  _check_timed(rows, names)
  by_name = {r["name"]: r for r in rows}
  assert math.isnan(by_name["train_step if8 16^3 native"]["jax_s"])
  assert not math.isnan(by_name["train_step if4 16^3 native"]["jax_s"])
  assert all(r["ref"] == "monai" for r in rows if not math.isnan(r["jax_s"]))
  assert by_name["train_step if4 16^3 s2d"]["compiles"] == 1


@pytest.mark.slow
def test_ops_quick_path_runs(monkeypatch):
  """20 small compiles, hence slow."""
  from experiments.benchmarks import ops

  monkeypatch.setattr(ops, "QUICK_SIZE", 8)
  rows = bench.bench(["ops"], quick=True)
  ops_ = ["conv3 32->32 L0", "conv3 64->64 L1", "down 32->64 L0->L1", "up 64->32 L1->L0"]
  ops_.append("batchnorm+relu 32 L0 (train)")
  _check_timed(rows, [f"{k} {o}" for o in ops_ for k in ("fwd", "fwdbwd")])


def test_scoring_quick_path_runs():
  rows = bench.bench(["scoring"], quick=True)
  _check_timed(rows, [r["name"] for r in rows])
  assert len(rows) == 8 and [r.get("ref") for r in rows[:2]] == ["numpy float32", "O(N^2) numpy PD"]


def test_runs_quick_path_runs(monkeypatch):
  """The `runs` section at a tiny size: one row per form, each against the separate
  cells, with the seconds per run-step on both sides."""
  from experiments import bench
  from experiments.benchmarks import runs

  monkeypatch.setattr(runs, "SIZE", 16)
  monkeypatch.setattr(runs, "ARCH", dict(init_filters=4, blocks_down=(1, 1, 1), out_channels=2))
  monkeypatch.setattr(runs, "_separate_cells", lambda jobs, steps: 0.5)
  rows = bench.bench(["runs"], quick=True)
  assert [r["name"] for r in rows] == [
    "K=1 alone, one process",
    "K=4 loop, one process",
    "K=4 vmap, one process",
  ]
  for r in rows:
    assert r["ref_s"] == 0.5 and r["ratio"] == r["jax_s"] / 0.5 and r["jax_s"] > 0
