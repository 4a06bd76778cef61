"""RAND (alias: rand) and FG-RAND (alias: fg_rand; nnActive's foreground-aware random)."""

from __future__ import annotations

import numpy as np

from assft_jax.strategies.base import Picked, Table, alias, register

FG_MIN_FRAC = 0.01


@register("random", keys=())
def random(table: Table, budget: int, rng: np.random.Generator) -> Picked:
  """Uniform without replacement over the queryable cases."""
  return rng.permutation(len(table.cand))[:budget], {}


alias("rand", "random")  # the paper's name (RAND), used by the sweep's --strategies


@register("fg_random", keys=("fg_frac",), options=("fg_min_frac",))
def fg_random(
  table: Table, budget: int, rng: np.random.Generator, *, fg_min_frac: float = FG_MIN_FRAC
) -> Picked:
  """Uniform among cases whose predicted foreground covers >= `fg_min_frac` of the
  volume (default 1 %). If fewer than `budget` qualify, all of them are taken and the
  rest is drawn uniformly from the other cases (so the budget is met)."""
  fg = table.get("fg_frac") >= fg_min_frac
  ok, rest = np.flatnonzero(fg), np.flatnonzero(~fg)
  first = rng.permutation(ok)[:budget]
  fill = rng.permutation(rest)[: budget - len(first)]
  return np.concatenate([first, fill]), {}


alias("fg_rand", "fg_random")  # the paper's FG-RAND, as the report names it
