"""A probe of what each query score ranks: the true gain of labeling one case, against the
score the case gets.

Both the paper and nnActive judge a query score only through the whole loop. The probe
measures it directly, at round 1 of a finished run: its labeled set L and its model F(1).
For each of M candidates x that round 2's query could pick, F(1) is fine-tuned for one
stage on L ∪ {x} under S training seeds, and once on L alone under the same seeds; x's
true gain is the mean test Dice of the first minus that of the second. Each score the
query strategies use is read from F(1)'s own scoring pass over the pool (the pass round
2's query ranks: round_001/scores.npz), and its Spearman ρ with the true gain, with a
bootstrap interval over the candidates, says whether the score ranks what it claims to.
The best candidate's gain is the best any query could do with one case; the mean over
candidates is what a random pick gets.

Candidates are drawn by seed, in proportion to the run's strata where it has them (its
--stratify_by), so they spread over the pool. Each (candidate, seed) training is one
cell: OUT/cells/<case id>/seed_<s>.json, skipped once written, so a probe resumes; the
baseline's cells are OUT/cells/_baseline/seed_<s>.json.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import stats as sps

from assft_jax import atomic, components
from assft_jax import config as config_lib
from assft_jax import data as data_lib
from assft_jax import workdir as wd_lib
from assft_jax.errors import AssftError
from assft_jax.pool import Pool

log = logging.getLogger("assft_jax.probe")

BASELINE = "_baseline"
ROUND = 1  # the round whose labeled set and model the probe starts from
# Scores and whether the strategies query their high end (True) or low end (margin).
SCORES = {
  "DKD": True,
  "PAKD": True,
  "PD": True,
  "ASD": True,
  "Q": True,
  "entropy": True,
  "least confidence": True,
  "margin": False,
  "BADGE gradient norm": True,
  "foreground fraction": True,
}
BOOTSTRAP = 2000


class ProbeError(AssftError, ValueError):
  """The probe cannot run as asked; the message names the flag or file."""


@dataclasses.dataclass(frozen=True)
class Setup:
  """What every cell of one probe shares: the run, its round-1 state and the candidates."""

  run: Path
  cfg: config_lib.RunConfig
  labeled: list[str]  # L: the labeled set after round 1
  candidates: list[str]
  seeds: list[int]
  scores: dict[str, dict[str, float]]  # score name -> {candidate: value}
  groups: dict[str, str] | None  # candidate -> stratum

  def cells(self) -> list[tuple[str, int]]:
    """(candidate or BASELINE, seed), baseline first."""
    return [(c, s) for c in [BASELINE, *self.candidates] for s in self.seeds]


def setup(run: str | Path, m: int, seeds: Sequence[int], seed: int = 0) -> Setup:
  """Reads the run's round 1 and draws M candidates; ProbeError for a bad run or M."""
  run = Path(run)
  cfg = wd_lib.read_config(run)
  rd = wd_lib.round_dir(run, ROUND)
  if not (rd / "DONE").is_file():
    raise ProbeError(f"--run={run}: round {ROUND} is not complete (no {rd / 'DONE'})")
  stats = wd_lib.read_scores(rd / wd_lib.SCORES)
  if stats is None:
    raise ProbeError(
      f"--run={run}: {rd / wd_lib.SCORES} is missing (the run predates rounds that keep "
      "their scoring pass); probe a run made with this version"
    )
  pool = Pool.from_json(wd_lib.read_json(rd / "pool.json"))
  queryable = list(pool.queryable)  # what round 2's query may pick
  if m < 2 or m > len(queryable):
    raise ProbeError(
      f"--candidates={m}: must be between 2 and the {len(queryable)} pool cases "
      f"queryable after round {ROUND} of {run}"
    )
  if len(seeds) < 1:
    raise ProbeError("--seeds: give at least one training seed")
  data = components.open_data(cfg, run)
  groups = (
    data_lib.case_groups(data.dataset, cfg.data.stratify_by) if cfg.data.stratify_by else None
  )
  candidates = draw_candidates(queryable, m, seed, groups)
  return Setup(
    run,
    cfg,
    list(pool.labeled_ids),
    candidates,
    list(seeds),
    round_scores(stats, queryable, candidates, cfg.al.rounds),
    None if groups is None else {c: groups[c] for c in candidates},
  )


def draw_candidates(
  ids: Sequence[str], m: int, seed: int, groups: Mapping[str, str] | None
) -> list[str]:
  """M of `ids`, seeded: each stratum gets its share by largest remainder (at least one
  where it can), then a uniform draw within it; without strata a uniform draw. In the
  order of `ids`."""
  rng = np.random.default_rng([seed, 11])
  if not groups:
    pick = set(rng.choice(len(ids), m, replace=False).tolist())
    return [c for i, c in enumerate(ids) if i in pick]
  by: dict[str, list[str]] = {}
  for c in ids:
    by.setdefault(groups[c], []).append(c)
  quota = {g: m * len(v) / len(ids) for g, v in by.items()}
  take = {g: min(len(by[g]), max(1, math.floor(q))) for g, q in quota.items()}
  for g in sorted(by, key=lambda g: -(quota[g] - math.floor(quota[g]))):
    if sum(take.values()) >= m:
      break
    if take[g] < len(by[g]):
      take[g] += 1
  while sum(take.values()) > m:
    g = max(take, key=lambda g: take[g])
    take[g] -= 1
  chosen = set()
  for g in sorted(by):
    chosen |= set(rng.choice(by[g], take[g], replace=False).tolist())
  return [c for c in ids if c in chosen]


def round_scores(
  stats: Mapping, queryable: Sequence[str], candidates: Sequence[str], R: int
) -> dict[str, dict[str, float]]:
  """Each score of `SCORES` for the candidates, as round 2's query would compute it:
  DKD, PD and Q over the queryable cases (the set that query ranks), the rest per case."""
  from assft_jax.scoring import assft, embed_kernels

  row = {c: i for i, c in enumerate(stats["ids"])}
  q = [row[c] for c in queryable]
  e0, er = np.asarray(stats["emb_0"])[q], np.asarray(stats["emb_r"])[q]
  pakd = np.asarray(embed_kernels.pakd(e0, er), np.float64)
  pd = np.asarray(embed_kernels.pairwise_dissimilarity(er, pakd.astype(np.float32)), np.float64)
  dkd = pakd * pd
  asd = np.asarray(stats["asd"], np.float64)[q]
  over_queryable = {
    "DKD": dkd,
    "PAKD": pakd,
    "PD": pd,
    "ASD": asd,
    "Q": assft.query_score(dkd, asd),
  }
  per_case = {
    "entropy": np.asarray(stats["entropy"], np.float64),
    "least confidence": np.asarray(stats["lc"], np.float64),
    "margin": np.asarray(stats["margin"], np.float64),
    "BADGE gradient norm": np.linalg.norm(np.asarray(stats["badge"], np.float64), axis=1),
    "foreground fraction": np.asarray(stats["fg_frac"], np.float64),
  }
  at = {c: i for i, c in enumerate(queryable)}
  missing = [c for c in candidates if c not in at]
  if missing:
    raise ProbeError(f"candidates {missing[:5]} are not queryable after round {ROUND}")
  out = {name: {c: float(v[at[c]]) for c in candidates} for name, v in over_queryable.items()}
  out.update({name: {c: float(v[row[c]]) for c in candidates} for name, v in per_case.items()})
  return out


def cell_path(out: Path, case: str, seed: int) -> Path:
  return Path(out) / "cells" / case / f"seed_{seed}.json"


def run_cells(st: Setup, out: Path, cells: Sequence[tuple[str, int]]) -> None:
  """Trains and evaluates the cells not yet written (one process; `--jobs` shards them)."""
  todo = [(c, s) for c, s in cells if not cell_path(out, c, s).is_file()]
  if not todo:
    return
  cfg = st.cfg
  data = components.open_data(cfg, st.run)
  trainer = components.Trainer.open(cfg, data)
  start = wd_lib.load_model(st.run, ROUND)
  labels = {c: np.asarray(data.volumes[c].label) for c in st.labeled}
  for case, seed in todo:
    targets = dict(labels)
    if case != BASELINE:
      targets[case] = np.asarray(data.volumes[case].label)
    epochs, _ = config_lib.stage_epochs(cfg, len(targets), cfg.train.epochs_round)
    v = trainer.fit(
      start, targets, epochs, components.stage_seed(seed, ROUND + 1, "s1"), desc=f"{case} {seed}"
    )
    res = trainer.evaluate(v, data.split["test"])
    cell = {
      "case": case,
      "seed": seed,
      "n_labeled": len(targets),
      "dice_mean": res["mean"],
      "per_case": {c: r["mean"] for c, r in res["per_case"].items()},
      "conv_impl": cfg.model.conv_impl,
    }
    atomic.write_json(cell_path(out, case, seed), cell)
    log.info("probe %s seed %d: test Dice %.4f", case, seed, res["mean"])


def gains(st: Setup, out: Path) -> dict[str, float]:
  """Each candidate's true gain: its mean test Dice over the seeds minus the baseline's.
  ProbeError naming a missing cell."""

  def dice(case: str) -> float:
    vals = []
    for s in st.seeds:
      path = cell_path(out, case, s)
      if not path.is_file():
        raise ProbeError(f"{path}: missing; rerun the probe to train it")
      vals.append(json.loads(path.read_text())["dice_mean"])
    return float(np.mean(vals))

  base = dice(BASELINE)
  return {c: dice(c) - base for c in st.candidates}


def spearman_ci(
  x: np.ndarray, y: np.ndarray, n_boot: int = BOOTSTRAP, seed: int = 0
) -> tuple[float, float, float, float]:
  """(ρ, p, lower, upper): scipy's Spearman ρ and p of x and y, and the 95 % percentile
  bootstrap interval of ρ over resampled pairs (resamples with a constant side skipped)."""
  res = sps.spearmanr(x, y)
  rng = np.random.default_rng(seed)
  n, boot = len(x), []
  for _ in range(n_boot):
    i = rng.integers(0, n, n)
    if np.ptp(x[i]) == 0 or np.ptp(y[i]) == 0:
      continue
    boot.append(sps.spearmanr(x[i], y[i]).statistic)
  lo, hi = np.percentile(boot, [2.5, 97.5]) if boot else (math.nan, math.nan)
  return float(res.statistic), float(res.pvalue), float(lo), float(hi)


def analyse(st: Setup, g: Mapping[str, float]) -> dict:
  """ρ of every score with the true gain, the gain of each score's own pick, random's
  expected gain and the best possible one, and the gains by stratum."""
  cands = list(st.candidates)
  gain = np.array([g[c] for c in cands])
  rows = []
  for name, high in SCORES.items():
    x = np.array([st.scores[name][c] for c in cands])
    rho, p, lo, hi = spearman_ci(x, gain)
    pick = cands[int(np.argmax(x) if high else np.argmin(x))]
    rows.append(
      {
        "score": name,
        "queried_end": "high" if high else "low",
        "rho": rho,
        "p": p,
        "ci": [lo, hi],
        "rho_toward_query": rho if high else -rho,
        "gain_of_its_pick": g[pick],
        "its_pick": pick,
      }
    )
  out = {
    "run": str(st.run),
    "round": ROUND,
    "n_labeled": len(st.labeled),
    "candidates": cands,
    "seeds": st.seeds,
    "gains": dict(g),
    "random_gain": float(gain.mean()),
    "best_gain": float(gain.max()),
    "best_case": cands[int(np.argmax(gain))],
    "worst_gain": float(gain.min()),
    "scores": rows,
    "score_values": {name: dict(v) for name, v in st.scores.items()},
    "conv_impl": st.cfg.model.conv_impl,
  }
  if st.groups:
    by: dict[str, list[float]] = {}
    for c in cands:
      by.setdefault(st.groups[c], []).append(g[c])
    out["by_stratum"] = {k: {"n": len(v), "mean_gain": float(np.mean(v))} for k, v in by.items()}
  return out
