"""ENPY, LCON, MMAR: per-case mean voxel uncertainty, top of the ranking."""

from __future__ import annotations

import numpy as np

from assft_jax.strategies.base import Picked, Table, register, top


@register("entropy", keys=("entropy",))
def entropy(table: Table, budget: int, rng: np.random.Generator) -> Picked:
  """ENPY: highest mean voxel entropy."""
  return top(table.get("entropy"), budget), {}


@register("least_confidence", keys=("lc",))
def least_confidence(table: Table, budget: int, rng: np.random.Generator) -> Picked:
  """LCON: highest mean voxel (1 - max p)."""
  return top(table.get("lc"), budget), {}


@register("margin", keys=("margin",))
def margin(table: Table, budget: int, rng: np.random.Generator) -> Picked:
  """MMAR: lowest mean voxel margin (p1 - p2)."""
  return top(table.get("margin"), budget, highest=False), {}
