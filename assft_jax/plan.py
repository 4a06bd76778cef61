"""What a run will do, worked out before it trains: the target pool's size, the budget per
round N_B, and each round's counts under the paper's rules.

Two rules meet in every round r >= 1 of a run with SSFT: the query takes N_B cases from
the queryable ones, and SSFT pseudo-labels N_SU = N_B * r unlabeled cases, which §3.4
bars from the next round's query. Once fewer than (r + 1) N_B cases are unlabeled before
round r + 1 (a pool of fewer than 1 + (2r + 1) N_B cases), the exclusion would leave
fewer than N_B of them to query. The paper does not say what happens then. This project lifts the exclusion for
that round's query: every unlabeled case is a candidate again (DECISIONS.md). The budget
is what people are paid to label, and N_SU is the balance SSFT trains on; the exclusion
only spares annotators cases the model already segments well, and the query's own scores
still rank such cases low.

`plan_rounds` computes the counts from the pool size alone (no data is read, no jax is
imported), so the loop, the sweep and the power measurement check a configuration, and
say where the rule applies, before anything trains. A budget larger than the pool is
refused there with one error.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from assft_jax import config as config_lib


@dataclasses.dataclass(frozen=True)
class RoundPlan:
  """The counts of one round r >= 1, as the loop will meet them."""

  round: int
  unlabeled: int  # unlabeled pool cases before the query
  excluded: int  # of them, pseudo-labelled in round r - 1 (§3.4)
  queryable: int  # the query's candidates (all unlabeled ones when the exclusion is lifted)
  queried: int  # N_B
  n_su: int  # pseudo-labelled after stage 1 (0 without SSFT)
  exclusion_lifted: bool


def plan_rounds(cfg: config_lib.RunConfig, pool_size: int) -> tuple[int, list[RoundPlan]]:
  """(N_B, the plan of rounds 1..R) of an AL run on a pool of `pool_size` cases.

  ConfigError, naming --budget and --rounds, when the pool cannot give 1 + N_B * R cases.
  """
  n_b = config_lib.budget_per_round(cfg.al.budget, pool_size)
  need = 1 + n_b * cfg.al.rounds
  if need > pool_size:
    raise config_lib.ConfigError(
      f"--budget={cfg.al.budget} × --rounds={cfg.al.rounds} (+1 initial case) asks for "
      f"{need} cases, but the target pool holds {pool_size} (after the "
      f"{cfg.data.test_fraction:.0%} test split). Lower --budget or --rounds."
    )
  ssft = config_lib.resolve_ssft(cfg).al.ssft
  unlabeled, excluded, plans = pool_size - 1, 0, []
  for r in range(1, cfg.al.rounds + 1):
    queryable = unlabeled - excluded
    lifted = excluded > 0 and queryable < n_b
    if lifted:
      queryable = unlabeled
    left = unlabeled - n_b
    n_su = min(n_b * r, left) if ssft else 0
    plans.append(RoundPlan(r, unlabeled, excluded, queryable, n_b, n_su, lifted))
    unlabeled, excluded = left, n_su
  return n_b, plans


def lifted_rounds(plans: list[RoundPlan]) -> list[int]:
  return [p.round for p in plans if p.exclusion_lifted]


def describe(cfg: config_lib.RunConfig, pool_size: int) -> str:
  """One paragraph for the log: the budget, SSFT's N_SU per round, and where §3.4's
  exclusion will be lifted."""
  n_b, plans = plan_rounds(cfg, pool_size)
  text = f"pool {pool_size} cases, N_B = {n_b} per round × {cfg.al.rounds} rounds (+1 initial case)"
  if not any(p.n_su for p in plans):
    return text + "; no SSFT"
  text += "; SSFT pseudo-labels N_SU = " + ", ".join(str(p.n_su) for p in plans)
  lifted = lifted_rounds(plans)
  if lifted:
    rounds = ", ".join(map(str, lifted))
    text += (
      f"; in round(s) {rounds} fewer than N_B cases stay queryable once the previous "
      "round's pseudo-labelled cases are excluded (§3.4), so that exclusion is lifted "
      "there"
    )
  return text


def pool_size(n_cases: int, n_labeled: int, test_fraction: float) -> int:
  """The target pool of a dataset: every case but the held-out test split, whose size is
  round(test_fraction × all cases), at least 1, drawn from the labeled ones (as
  `pool.draw_split` draws it)."""
  return n_cases - (max(1, round(test_fraction * n_cases)) if n_labeled else 0)


def pool_size_of(cfg: config_lib.RunConfig) -> int:
  """The pool size of cfg's dataset without preprocessing anything: the phantom's case
  count, or the dataset index (file listing and dataset.json only)."""
  d = cfg.data
  if not d.data_dir:
    return pool_size(d.phantom_n, d.phantom_n, d.test_fraction)
  from assft_jax.data.classes import parse_label_map
  from assft_jax.data.datasets import load_index

  ds = load_index(
    Path(d.data_dir),
    d.layout,
    label_map=parse_label_map(d.label_map),
    drop_labels=d.drop_labels,
    keep_labels=d.keep_labels,
    validate="none",
    require_labels=cfg.al.oracle == "ground_truth",
    include=d.include,
    splits=d.splits,
  )
  return pool_size(len(ds.cases), sum(c.label is not None for c in ds.cases), d.test_fraction)
