"""Statistical power of a benchmark: can it tell case choices apart?

Two numbers, measured before any strategy is compared:
- training noise: one fixed labeled set trained with several training seeds; the SD of
  the mean test Dice over those seeds;
- selection effect: two labeled sets of the same size, one chosen well (every stratum
  of --stratify_by, e.g. every scanner and the hard cases, in its share of the pool)
  and one chosen poorly (the largest stratum only); the difference of their mean test
  Dice.

A benchmark separates strategies when the effect is several times the noise (the
report asks for 4×, `report.power.TARGET_RATIO`). Every training starts from F(0) and
runs `steps` optimiser steps, as many as a run's labeled set sees by its last round. The
split is the seed-0 split of the run settings and stays fixed; only the training seed
varies. Each (set, seed) cell is a workdir under `out` and is skipped once done, so the
measurement resumes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import stats

from assft_jax import atomic, components, plan
from assft_jax import config as config_lib
from assft_jax import data as data_lib
from assft_jax import workdir as wd_lib

log = logging.getLogger("assft_jax.power")

SETS = ("well", "poor")
RULES = {
  "strata": "well: every stratum of --stratify_by in its share of the pool; poor: the "
  "largest stratum only",
  "minority": "well: every stratum of --stratify_by in its share of the pool; poor: the "
  "smallest stratum only (as a query that over-draws one minority group of cases)",
  "similarity": "well: k-center greedy on the cases' E(0) embeddings (cosine) from their "
  "medoid, a set that covers the pool; poor: the k mutually most similar cases (the case "
  "whose k - 1 nearest neighbours are closest, and those neighbours)",
}


def choose_sets(
  pool: Sequence[str], groups: Mapping[str, str], k: int, poor: str = "largest"
) -> dict[str, list[str]]:
  """{"well": ids, "poor": ids}, k each, from the pool (dataset order within a stratum).

  well: every stratum at least once, the rest by the largest remainder of its pool
        share (a representative set, as a stratified sample would draw it);
  poor: the largest stratum only (a majority-scanner set), or with poor="smallest" the
        smallest stratum only (a query that over-draws one minority group).
  """
  by: dict[str, list[str]] = {}
  for c in pool:
    by.setdefault(groups[c], []).append(c)
  strata = sorted(by, key=lambda g: (-len(by[g]), g))
  only = strata[0] if poor == "largest" else strata[-1]
  if k < len(strata) or k > len(by[only]):
    raise config_lib.ConfigError(
      f"--set_size={k}: needs at least one case per stratum ({len(strata)}) and at most "
      f"the {poor} stratum's {len(by[only])} cases"
    )
  quota = {g: k * len(by[g]) / len(pool) for g in strata}
  take = {g: max(1, math.floor(quota[g])) for g in strata}
  for g in sorted(strata, key=lambda g: -(quota[g] - math.floor(quota[g]))):
    if sum(take.values()) >= k:
      break
    take[g] += 1
  while sum(take.values()) > k:  # the minimum of 1 overshot: trim the largest stratum
    take[strata[0]] -= 1
  well = [c for g in strata for c in by[g][: take[g]]]
  return {"well": well, "poor": by[only][:k]}


def run_extent(cfg: config_lib.RunConfig, pool_size: int) -> tuple[int, int]:
  """(labeled cases by the last round, optimiser steps by then) of a run without stage 3.

  cases = 1 + R·N_B; steps = the init stage's on one case plus each round's stage 1 on
  1 + r·N_B cases, with the run's epochs per stage (`config.stage_epochs`: fixed steps
  per epoch, or one pass over the stage's cases, cut to --max_stage_steps).
  """
  n_b, _ = plan.plan_rounds(cfg, pool_size)  # refuses a budget the pool cannot give
  stages = [(1, cfg.train.epochs_init)]
  stages += [(1 + r * n_b, cfg.train.epochs_round) for r in range(1, cfg.al.rounds + 1)]
  steps = 0
  for n_cases, epochs in stages:
    e, spe = config_lib.stage_epochs(cfg, n_cases, epochs)
    steps += e * spe
  return 1 + cfg.al.rounds * n_b, steps


def similarity_sets(ids: Sequence[str], emb: np.ndarray, k: int) -> dict[str, list[str]]:
  """{"well": ids, "poor": ids}, k each, from E(0) embeddings [N, F] (in the order of ids).

  well: k-center greedy under cosine distance, starting from the medoid (the case nearest
        the mean unit embedding): each next case is the one farthest from those chosen, so
        the set covers the pool as Core-set's query would;
  poor: the k mutually most similar cases: the case whose k - 1 nearest neighbours are
        closest (smallest sum of distances), with those neighbours, as a query that ranks
        by one score without diversity can draw near-duplicates.
  """
  n = len(ids)
  if not 2 <= k <= n:
    raise config_lib.ConfigError(f"--set_size={k}: needs 2 to {n} cases (the pool)")
  u = np.asarray(emb, np.float64)
  u = u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
  dist = np.clip(1.0 - u @ u.T, 0.0, 2.0)
  chosen = [int(np.argmax(u @ u.mean(axis=0)))]
  nearest = dist[chosen[0]].copy()
  while len(chosen) < k:
    nxt = int(np.argmax(np.where(np.isin(np.arange(n), chosen), -1.0, nearest)))
    chosen.append(nxt)
    nearest = np.minimum(nearest, dist[nxt])
  others = dist + np.diag(np.full(n, np.inf))  # a case is not its own neighbour
  order = np.argsort(others, axis=1, kind="stable")[:, : k - 1]
  centre = int(np.argmin(np.take_along_axis(others, order, axis=1).sum(axis=1)))
  poor = {centre, *order[centre].tolist()}
  return {
    "well": [c for i, c in enumerate(ids) if i in set(chosen)],
    "poor": [c for i, c in enumerate(ids) if i in poor],
  }


def _steps_per_epoch(cfg: config_lib.RunConfig, k: int) -> int:
  """--steps_per_epoch, or one pass over a set of k cases."""
  return cfg.train.steps_per_epoch or math.ceil(k / cfg.train.batch_size)


def measure(
  cfg: config_lib.RunConfig,
  out: Path,
  seeds: Sequence[int],
  k: int | None = None,
  steps: int | None = None,
  rule: str = "strata",
) -> dict:
  """Trains every (set, seed) cell not yet done; returns and writes OUT/power.json.

  k and steps default to `run_extent` of the run settings. rule: how the two sets are
  chosen (`RULES`): by the strata of --stratify_by, or by similarity of the cases' E(0)
  embeddings (for data without strata that matter). The per-stratum Dice is reported
  wherever --stratify_by gives strata.
  """
  if rule not in RULES:
    raise config_lib.ConfigError(f"--sets={rule!r}: expected one of {', '.join(RULES)}")
  if rule in ("strata", "minority") and not cfg.data.stratify_by:
    raise config_lib.ConfigError(
      "--stratify_by is empty: the power measurement's strata sets need it (e.g. "
      "scanner,hard), or choose the sets by similarity (--sets=similarity)"
    )
  out = Path(out)
  base = dataclasses.replace(cfg, seed=0, workdir=str(out / "split"))
  data = components.open_data(base, out / "split")
  pool = data.split["pool"]
  groups = (
    data_lib.case_groups(data.dataset, cfg.data.stratify_by)
    if cfg.data.stratify_by
    else dict.fromkeys(data.dataset.ids, "all")
  )
  run_k, run_steps = run_extent(cfg, len(pool))
  k = run_k if k is None else k
  steps = run_steps if steps is None else steps
  if rule in ("strata", "minority"):
    sets = choose_sets(pool, groups, k, "largest" if rule == "strata" else "smallest")
  else:
    sets = similarity_sets(pool, components.Trainer.open(base, data).embed0(pool), k)
  spe = _steps_per_epoch(cfg, k)
  cells = []
  for name in SETS:
    for s in seeds:
      wd = out / name / f"seed_{s}"
      cell = wd_lib.read_json(wd / "cell.json")
      _check_cell(cell, wd, sets[name], steps, cfg.model.conv_impl)
      if cell is None:
        run_cfg = dataclasses.replace(cfg, seed=s, workdir=str(wd))
        trainer = components.Trainer.open(run_cfg, data)
        labels = {c: np.asarray(data.volumes[c].label) for c in sets[name]}
        seed = components.stage_seed(s, 0, "s1")
        v = trainer.fit(trainer.variables0, labels, math.ceil(steps / spe), seed, desc=name)
        res = trainer.evaluate(v, data.split["test"])
        cell = {
          "set": name,
          "seed": s,
          "ids": sets[name],
          "steps": steps,
          "conv_impl": cfg.model.conv_impl,
          "dice_mean": res["mean"],
          "per_case": {c: r["mean"] for c, r in res["per_case"].items()},
        }
        atomic.write_json(wd / "cell.json", cell)
      log.info("%s seed %d: test Dice %.4f", name, s, cell["dice_mean"])
      cells.append(cell)
  result = summarize(cells, groups, data.split["test"])
  result.update(set_size=k, steps=steps, seeds=list(seeds), sets=sets, rule=RULES[rule])
  atomic.write_json(out / "power.json", result)
  return result


def _check_cell(
  cell: Mapping | None, wd: Path, ids: Sequence[str], steps: int, conv_impl: str
) -> None:
  """A finished cell is reused only when it measured this set for this many steps with
  this conv kernel (the kernel moves single trainings by float32 rounding)."""
  if cell is None:
    return
  if cell.get("steps") != steps or list(cell.get("ids", ())) != list(ids):
    raise config_lib.ConfigError(
      f"{wd / 'cell.json'} holds a measurement of another set or step count "
      f"(steps {cell.get('steps')} against {steps} now); give another --out"
    )
  if cell.get("conv_impl") != conv_impl:
    made = cell.get("conv_impl") or "an unrecorded kernel (made before cells recorded it)"
    raise config_lib.ConfigError(
      f"{wd / 'cell.json'} was measured with the conv kernel {made}, and this process runs "
      f"{conv_impl!r}; measure with one kernel (--conv_impl) or give another --out"
    )


def summarize(cells: Sequence[Mapping], groups: Mapping[str, str], test: Sequence[str]) -> dict:
  """Noise, effect and their ratio from the cells ({set, seed, dice_mean, per_case}).

  noise: the pooled SD over seeds (root of the mean of the sets' variances, ddof=1);
  effect: mean(well) − mean(poor); ratio: effect / noise; p: Welch's t-test over seeds.
  by_group: each set's mean Dice on the test cases of each stratum.
  """
  dice = {n: np.array([c["dice_mean"] for c in cells if c["set"] == n]) for n in SETS}
  sd = {n: float(np.std(v, ddof=1)) if len(v) > 1 else math.nan for n, v in dice.items()}
  noise = float(np.sqrt(np.mean([sd[n] ** 2 for n in SETS])))
  effect = float(dice["well"].mean() - dice["poor"].mean())
  strata = sorted({groups[t] for t in test})
  by_group = {}
  for n in SETS:
    per = [c["per_case"] for c in cells if c["set"] == n]
    by_group[n] = {
      g: float(np.nanmean([p[t] for p in per for t in test if groups[t] == g])) for g in strata
    }
  p = stats.ttest_ind(dice["well"], dice["poor"], equal_var=False).pvalue
  return {
    "mean": {n: float(v.mean()) for n, v in dice.items()},
    "sd": sd,
    "noise_sd": noise,
    "effect": effect,
    "ratio": effect / noise if noise > 0 else (math.nan if math.isnan(noise) else math.inf),
    "welch_p": float(p),
    "by_group": by_group,
    "n_test": len(test),
    "test_groups": {g: sum(groups[t] == g for t in test) for g in sorted(set(groups.values()))},
  }
