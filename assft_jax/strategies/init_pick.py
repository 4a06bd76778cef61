"""The r = 0 pick: the one case labeled before any query round (--init_pick)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from assft_jax.scoring.assft import unit_rows
from assft_jax.strategies.base import StrategyError

RULES = ("first", "random", "medoid")


def pick_initial(
  rule: str, ids: Sequence[str], seed: int, embed0: Callable[[list[str]], np.ndarray]
) -> str:
  """The id to label at r = 0, by `rule`:

  first:  ids[0].
  random: uniform from np.random.default_rng([seed, 0]) (stream 0: the init's own).
  medoid: the case whose unit E(0) embedding has the largest dot product with the mean
          unit embedding, i.e. the smallest cosine distance to it; ties:
          the first in `ids`. embed0(ids) -> [len(ids), F] is called for this rule only
          (an encoder pass over the pool).
  """
  ids = list(ids)
  if rule not in RULES:
    raise StrategyError(f"unknown init pick {rule!r}; valid: {', '.join(RULES)}")
  if not ids:
    raise StrategyError("init pick: the pool is empty")
  if rule == "first":
    return ids[0]
  if rule == "random":
    return ids[int(np.random.default_rng([seed, 0]).integers(len(ids)))]
  e = np.asarray(embed0(ids))
  if e.ndim != 2 or e.shape[0] != len(ids):
    raise ValueError(f"embed0 gave shape {e.shape} for {len(ids)} ids; want [N, F]")
  u = unit_rows(e)
  return ids[int(np.argmax(u @ u.mean(axis=0)))]
