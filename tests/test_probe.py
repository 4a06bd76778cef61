"""The probe (assft_jax/probe.py): Spearman ρ of made-up scores against made-up gains as
scipy computes it, the candidates' draw, the errors, and a whole probe of the smoke run."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as sps

from assft_jax import probe
from assft_jax import workdir as wd_lib
from assft_jax.config import RunConfig
from assft_jax.report import probe as probe_section
from tests._run_helpers import ROOT


def _setup(tmp_path, scores, gains, seeds=(0, 1)):
  """A Setup over made-up candidates, with cells whose Dice give `gains` exactly."""
  cands = list(gains)
  st = probe.Setup(
    run=tmp_path / "run",
    cfg=RunConfig(workdir="x"),
    labeled=["l0"],
    candidates=cands,
    seeds=list(seeds),
    scores={name: dict(zip(cands, vals)) for name, vals in scores.items()},
    groups={c: ("A" if i % 2 else "B") for i, c in enumerate(cands)},
  )
  out = tmp_path / "probe"
  for s in seeds:  # baseline 0.5 + seed noise; a candidate = baseline + its gain
    base = 0.5 + 0.01 * s
    cells = {probe.BASELINE: base, **{c: base + g for c, g in gains.items()}}
    for c, d in cells.items():
      path = probe.cell_path(out, c, s)
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_text(json.dumps({"dice_mean": d}))
  return st, out


def test_analysis_matches_scipy_and_picks_by_the_query_end(tmp_path):
  rng = np.random.default_rng(3)
  n = 12
  gains = {f"c{i}": float(g) for i, g in enumerate(rng.normal(0.01, 0.02, n))}
  g = np.array(list(gains.values()))
  scores = {name: rng.normal(size=n) for name in probe.SCORES}
  scores["entropy"] = g + rng.normal(0, 0.001, n)  # ranks the gain almost exactly
  scores["margin"] = -g  # its query takes the LOW end: the best pick
  st, out = _setup(tmp_path, scores, gains)
  got = probe.gains(st, out)
  assert got == pytest.approx(gains, abs=1e-12)
  res = probe.analyse(st, got)
  by = {r["score"]: r for r in res["scores"]}
  for name, vals in scores.items():
    ref = sps.spearmanr(vals, g)
    assert by[name]["rho"] == pytest.approx(ref.statistic, abs=1e-12)
    assert by[name]["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    lo, hi = by[name]["ci"]
    assert lo <= by[name]["rho"] + 1e-9 and by[name]["rho"] - 1e-9 <= hi
  assert by["entropy"]["rho"] > 0.95 and by["margin"]["rho"] == pytest.approx(-1.0)
  assert by["margin"]["rho_toward_query"] == pytest.approx(1.0)
  best = max(gains, key=gains.get)
  assert by["margin"]["its_pick"] == best and by["entropy"]["its_pick"] == best
  assert res["random_gain"] == pytest.approx(g.mean()) and res["best_gain"] == pytest.approx(
    g.max()
  )
  a = [gains[c] for i, c in enumerate(gains) if i % 2]
  assert res["by_stratum"]["A"] == {"n": len(a), "mean_gain": pytest.approx(np.mean(a))}
  md = "\n".join(probe_section.markdown(res))
  assert "| margin | low | -1.00 |" in md


def test_a_missing_cell_is_named(tmp_path):
  st, out = _setup(tmp_path, {n: [0.0, 1.0] for n in probe.SCORES}, {"a": 0.1, "b": 0.2})
  probe.cell_path(out, "b", 1).unlink()
  with pytest.raises(probe.ProbeError, match="seed_1.json: missing"):
    probe.gains(st, out)


def test_candidates_spread_over_the_strata():
  ids = [f"a{i}" for i in range(60)] + [f"b{i}" for i in range(30)] + [f"c{i}" for i in range(10)]
  groups = {c: c[0] for c in ids}
  got = probe.draw_candidates(ids, 30, 0, groups)
  assert len(got) == len(set(got)) == 30
  count = {g: sum(groups[c] == g for c in got) for g in "abc"}
  assert count == {"a": 18, "b": 9, "c": 3}  # 60 %, 30 %, 10 % of 30
  assert got == probe.draw_candidates(ids, 30, 0, groups)  # seeded
  assert got != probe.draw_candidates(ids, 30, 1, groups)
  assert len(probe.draw_candidates(ids, 5, 0, None)) == 5


def test_a_probe_of_the_smoke_run_and_its_errors(smoke, tmp_path):
  """M larger than the pool left at round 1 is one clear error; a probe of two candidates
  under one seed runs, writes its files, and a rerun trains nothing again."""
  _, wd, _ = smoke
  pool = wd_lib.read_json(wd_lib.round_dir(wd, 1) / "pool.json")
  n = len(set(pool["unlabeled"]) - set(pool["excluded"]))  # queryable in round 2
  with pytest.raises(probe.ProbeError, match=f"between 2 and the {n} pool cases"):
    probe.setup(wd, n + 1, [0])
  out = tmp_path / "probe"
  cmd = [sys.executable, "-m", "experiments.probe", f"--run={wd}", f"--out={out}"]
  cmd += ["--candidates=2", "--seeds=0"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  res = json.loads((out / "probe.json").read_text())
  assert len(res["candidates"]) == 2 and set(res["gains"]) == set(res["candidates"])
  assert {r["score"] for r in res["scores"]} == set(probe.SCORES)
  assert (out / "probe.md").is_file() and (out / "probe_scatter.png").is_file()
  stamp = {p: p.stat().st_mtime_ns for p in (out / "cells").rglob("*.json")}
  assert len(stamp) == 3  # the baseline and two candidates, one seed
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0 and stamp == {
    p: p.stat().st_mtime_ns for p in (out / "cells").rglob("*.json")
  }
  bad = [*cmd[:4], f"--out={tmp_path / 'bad'}", "--candidates=999"]
  proc = subprocess.run(bad, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 1 and "--candidates=999" in proc.stderr
  assert "Traceback" not in proc.stderr
