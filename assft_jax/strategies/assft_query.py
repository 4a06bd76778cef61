"""ASSFT's Active Test Time Sample Query (DKD + ASD, Eq. 1-16) and its ablations.

Scores are computed over the queryable cases (the set being ranked): PD's ranking,
min-max and the quantile transform all see exactly the candidates. `assft` is the same
selection as `dkd_asd`; the SSFT stage is the loop's flag, not part of the query.
The DKD and Q computed here are returned with the picks (Selection.scores).
DKD runs on the device (`scoring.embed_kernels`, float32); min-max, sklearn's quantile
transform (Q) and the top-N_B pick stay on the host: they are O(N) on [N] vectors.
"""

from __future__ import annotations

import numpy as np

from assft_jax.scoring import assft, embed_kernels
from assft_jax.strategies.base import Picked, Table, alias, register, top


def _dkd(table: Table) -> np.ndarray:
  return np.asarray(embed_kernels.dkd(table.get("emb_0"), table.get("emb_r")))


@register("dkd", keys=("emb_0", "emb_r"))
def dkd_high(table: Table, budget: int, rng: np.random.Generator) -> Picked:
  """High DKD (Table 6)."""
  d = _dkd(table)
  return top(d, budget), {"dkd": d}


@register("dkd_low", keys=("emb_0", "emb_r"))
def dkd_low(table: Table, budget: int, rng: np.random.Generator) -> Picked:
  """Low DKD (Table 6 ablation)."""
  d = _dkd(table)
  return top(d, budget, highest=False), {"dkd": d}


@register("asd", keys=("asd",))
def asd_high(table: Table, budget: int, rng: np.random.Generator) -> Picked:
  """High ASD with tau(r) (Table 7)."""
  return top(table.get("asd"), budget), {}


@register("asd_low", keys=("asd",))
def asd_low(table: Table, budget: int, rng: np.random.Generator) -> Picked:
  """Low ASD with tau(r) (Table 7 ablation)."""
  return top(table.get("asd"), budget, highest=False), {}


@register("asd_tau1", keys=("asd_tau1",))
def asd_tau1(table: Table, budget: int, rng: np.random.Generator) -> Picked:
  """High ASD with tau = 1 (Table 7 ablation)."""
  return top(table.get("asd_tau1"), budget), {}


@register("asd_tau1_low", keys=("asd_tau1",))
def asd_tau1_low(table: Table, budget: int, rng: np.random.Generator) -> Picked:
  """Low ASD with tau = 1 (Table 7 ablation)."""
  return top(table.get("asd_tau1"), budget, highest=False), {}


@register("dkd_asd", keys=("emb_0", "emb_r", "asd"))
def dkd_asd(table: Table, budget: int, rng: np.random.Generator) -> Picked:
  """Top N_B by Q = QT(minmax(DKD)) + QT(minmax(ASD)) (Eq. 12-16)."""
  d = _dkd(table)
  q = assft.query_score(d, table.get("asd"))
  return top(q, budget), {"dkd": d, "Q": q}


alias("assft", "dkd_asd")
