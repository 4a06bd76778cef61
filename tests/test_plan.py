"""The start check of a run (`assft_jax.plan`): N_B, SSFT's N_SU per round, and the rounds
where §3.4's exclusion would leave fewer than N_B cases to query, by hand."""

from __future__ import annotations

import pytest

from assft_jax import flags as run_flags
from assft_jax import plan
from assft_jax.config import ConfigError
from tests._run_helpers import SMOKE


def cfg(*argv: str):
  return run_flags.parse([f"--flagfile={SMOKE}", "--workdir=x", *argv], machine=False)


def test_the_smoke_pool_runs_short_at_round_three_with_ssft():
  # 12 cases, a test split of round(0.25 * 12) = 3: a pool of 9; N_B = 2.
  # r1: 8 unlabeled, none excluded -> query 2 -> 6 left, N_SU = min(2, 6) = 2.
  # r2: 6 unlabeled, 2 excluded, 4 queryable -> 4 left, N_SU = min(4, 4) = 4.
  # r3: 4 unlabeled, 4 excluded, 0 queryable < 2 -> lifted: all 4 -> 2 left, N_SU 2.
  n_b, rounds = plan.plan_rounds(cfg("--rounds=3"), plan.pool_size(12, 12, 0.25))
  assert n_b == 2
  got = [(p.unlabeled, p.excluded, p.queryable, p.n_su, p.exclusion_lifted) for p in rounds]
  assert got == [(8, 0, 8, 2, False), (6, 2, 4, 4, False), (4, 4, 4, 2, True)]
  assert plan.lifted_rounds(rounds) == [3]
  assert "round(s) 3" in plan.describe(cfg("--rounds=3"), 9)


def test_without_ssft_nothing_is_excluded_and_two_rounds_never_run_short():
  _, rounds = plan.plan_rounds(cfg("--rounds=3", "--strategy=random"), 9)
  assert [p.n_su for p in rounds] == [0, 0, 0] and plan.lifted_rounds(rounds) == []
  _, rounds = plan.plan_rounds(cfg("--rounds=2"), 9)
  assert plan.lifted_rounds(rounds) == []


def test_percent_budgets_follow_the_pool():
  # 10 % of 150 = 15 per round over 5 rounds, with SSFT: before round 5, 150 - 1 - 60 = 89
  # unlabeled, 60 excluded -> 29 >= 15 queryable; before round 4: 104, 45 -> 59.
  _, rounds = plan.plan_rounds(cfg("--budget=10%", "--rounds=5"), 150)
  assert plan.lifted_rounds(rounds) == []
  # 20 % of 150 = 30 per round over 3 rounds: round 3 has 149 - 60 = 89 unlabeled and
  # 60 excluded, 29 < 30 queryable: round 3's query lifts the exclusion.
  _, rounds = plan.plan_rounds(cfg("--budget=20%", "--rounds=3"), 150)
  assert plan.lifted_rounds(rounds) == [3] and rounds[2].queryable == 89


def test_a_budget_the_pool_cannot_give_is_refused():
  with pytest.raises(ConfigError, match="asks for 16 cases, but the target pool holds 9"):
    plan.plan_rounds(cfg("--budget=5", "--rounds=3"), 9)


def test_pool_size_follows_the_split_rule():
  assert plan.pool_size(12, 12, 0.25) == 9
  assert plan.pool_size(200, 200, 0.25) == 150
  assert plan.pool_size(5, 0, 0.25) == 5  # no labeled case, no test split
  assert plan.pool_size_of(cfg()) == 9  # the phantom: phantom_n cases, all labeled
