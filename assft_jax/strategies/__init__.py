"""Query strategies: `get(name).select(stats, pool, budget, rng, r=..., R=...) -> Selection`.

Modules register their strategies on import (one module per family):
  random_sampling: random (alias: rand), fg_random
  uncertainty: entropy, least_confidence, margin
  diversity: coreset, badge               hybrid: sann, ugtst, cup
  assft_query: dkd, dkd_low, asd, asd_low, asd_tau1, asd_tau1_low,
    dkd_asd (alias: assft)
  ssft: select_reliable, n_su (the §3.3 pseudo-label selection)
  init_pick: pick_initial (the r = 0 case)
"""

from assft_jax.pool import Pool

# Imported for their side effect: each module registers its strategies.
from assft_jax.strategies import (  # noqa: F401
  assft_query,
  diversity,
  hybrid,
  random_sampling,
  uncertainty,
)
from assft_jax.strategies.base import Selection, Strategy, StrategyError, get, names, register
from assft_jax.strategies.init_pick import pick_initial
from assft_jax.strategies.ssft import n_su, select_reliable

__all__ = [
  "Pool",
  "Selection",
  "Strategy",
  "StrategyError",
  "get",
  "names",
  "register",
  "pick_initial",
  "select_reliable",
  "n_su",
]
