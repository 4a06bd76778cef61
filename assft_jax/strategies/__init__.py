"""Query strategies: `get(name).select(stats, pool, budget, rng, r=..., R=...) -> ids`.

Modules register their strategies on import (one module per family):
  random_sampling: random, fg_random      uncertainty: entropy, least_confidence, margin
  diversity: coreset, badge               hybrid: sann, ugtst, cup
  assft_query: dkd, dkd_low, asd, asd_low, asd_tau1, dkd_asd (alias: assft)
  ssft: select_reliable, next_excluded, n_su (the §3.3-3.4 pseudo-label selection)
"""

# Imported for their side effect: each module registers its strategies.
from assft_jax.strategies import (  # noqa: F401
  assft_query,
  diversity,
  hybrid,
  random_sampling,
  uncertainty,
)
from assft_jax.strategies.base import Strategy, StrategyError, get, names
from assft_jax.strategies.ssft import n_su, next_excluded, select_reliable

__all__ = ["Strategy", "StrategyError", "get", "names", "select_reliable", "next_excluded", "n_su"]
