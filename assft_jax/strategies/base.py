"""The strategy interface, its input checks and the name registry.

A strategy is data in, ids out:
`select(stats, pool, budget, rng, *, r=None, R=None, allow_all=False, **options) -> Selection`.
  stats:   dict of numpy arrays aligned on stats["ids"] (labeled and unlabeled cases);
           scalar keys are [N], embeddings [N, F].
  pool:    assft_jax.pool.Pool; only `pool.queryable` may be returned.
  budget:  how many ids to return (>= 1, <= len(pool.queryable); with `allow_all=True`
           a larger budget returns every queryable case, in the strategy's order).
  rng:     np.random.Generator, the only source of randomness.
  r, R:    the round and the number of rounds. Every strategy accepts them; none reads
           them (the ASD temperature is applied in the scoring pass).
  options: the strategy's own keywords, declared at `register` (e.g. sann_pool); any
           other keyword is a StrategyError, so a misspelled option cannot pass silently.

A registered function is `fn(table, budget, rng, **options) -> (indices, scores)`:
indices into `table.cand`, and the scores it computed to rank them, each [len(cand)].
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from assft_jax.errors import AssftError
from assft_jax.pool import Pool


class StrategyError(AssftError, ValueError):
  """Bad input to a query strategy (budget, pool, stats, name or option)."""


@dataclasses.dataclass(frozen=True)
class Table:
  """The rows of `stats` a strategy may read, gathered once after the checks.

  cand:    the queryable ids, in pool order; strategies return indices into it.
  labeled: the labeled ids that appear in stats (anchors / initial centers).
  """

  stats: Mapping[str, np.ndarray]
  cand: tuple[str, ...]
  labeled: tuple[str, ...]
  unlabeled: tuple[str, ...]
  row: Mapping[str, int]

  def get(self, key: str, which: str = "cand") -> np.ndarray:
    ids = {"cand": self.cand, "labeled": self.labeled, "unlabeled": self.unlabeled}[which]
    return np.asarray(self.stats[key])[[self.row[i] for i in ids]]


@dataclasses.dataclass(frozen=True)
class Selection:
  """What a strategy returns.

  ids:    the queried ids, in the strategy's order.
  scores: score name -> {candidate id: value} for every queryable case, holding what the
          strategy computed to rank them beyond the per-case stats (dkd_asd: "dkd" and
          "Q"; dkd, dkd_low: "dkd"); {} for strategies that rank by a stats key directly.
  """

  ids: list[str]
  scores: dict[str, dict[str, float]]


Picked = tuple[Sequence[int], Mapping[str, np.ndarray]]  # (cand indices, {name: [n_cand]})
SelectFn = Callable[..., Picked]  # (table, budget, rng, **options) -> Picked
ROUND_CONTEXT = ("r", "R")


@dataclasses.dataclass(frozen=True)
class Strategy:
  name: str
  keys: tuple[str, ...]  # stats keys read on unlabeled rows (presence, NaN)
  fn: SelectFn
  labeled_keys: tuple[str, ...] = ()  # keys read on labeled rows
  options: tuple[str, ...] = ()  # keyword options of fn, besides the round context
  doc: str = ""

  def select(
    self,
    stats: Mapping,
    pool: Pool,
    budget: int,
    rng: np.random.Generator,
    *,
    r: int | None = None,
    R: int | None = None,
    allow_all: bool = False,
    **options,
  ) -> Selection:
    unknown = sorted(set(options) - set(self.options))
    if unknown:
      valid = ", ".join((*self.options, *ROUND_CONTEXT, "allow_all"))
      raise StrategyError(f"strategy {self.name!r}: unknown option(s) {unknown}; valid: {valid}")
    table, n = check_inputs(self.name, stats, pool, budget, self.keys, self.labeled_keys, allow_all)
    idx, scores = self.fn(table, n, rng, **options)
    idx = [int(i) for i in idx]
    if len(idx) != n or len(set(idx)) != n:
      raise AssertionError(f"strategy {self.name!r} returned {idx} for budget {n}")
    if any(np.shape(v) != (len(table.cand),) for v in scores.values()):
      raise AssertionError(f"strategy {self.name!r}: a score is not [{len(table.cand)}]")
    return Selection(
      ids=[table.cand[i] for i in idx],
      scores={
        k: dict(zip(table.cand, np.asarray(v, np.float64).tolist())) for k, v in scores.items()
      },
    )


_REGISTRY: dict[str, Strategy] = {}


def register(
  name: str,
  keys: Sequence[str],
  labeled_keys: Sequence[str] = (),
  options: Sequence[str] = (),
  doc: str = "",
):
  """Decorator: registers `fn(table, budget, rng, **options) -> (indices, scores)` as
  `name`. `options` must be exactly fn's keyword-only parameters; `doc` defaults to fn's
  docstring."""

  def deco(fn: SelectFn) -> SelectFn:
    if name in _REGISTRY:
      raise ValueError(f"strategy {name!r} registered twice")
    kwonly = {p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY}
    if kwonly != set(options):
      raise ValueError(f"strategy {name!r}: options {sorted(options)} != fn keywords {kwonly}")
    _REGISTRY[name] = Strategy(
      name, tuple(keys), fn, tuple(labeled_keys), tuple(options), doc or inspect.getdoc(fn) or ""
    )
    return fn

  return deco


def alias(name: str, target: str) -> None:
  """Registers `name` as another name of the strategy `target` (same fn and options)."""
  if name in _REGISTRY:
    raise ValueError(f"strategy {name!r} registered twice")
  _REGISTRY[name] = dataclasses.replace(_REGISTRY[target], name=name)


def get(name: str) -> Strategy:
  if name not in _REGISTRY:
    raise StrategyError(f"unknown strategy {name!r}; valid names: {', '.join(names())}")
  return _REGISTRY[name]


def names() -> list[str]:
  return sorted(_REGISTRY)


def check_inputs(
  name: str,
  stats: Mapping,
  pool: Pool,
  budget: int,
  keys: Sequence[str],
  labeled_keys: Sequence[str],
  allow_all: bool,
) -> tuple[Table, int]:
  """Validates one select call; returns the table and the effective budget."""
  cand = pool.queryable
  if not cand:
    raise StrategyError(
      f"{name}: the pool has no queryable case (unlabeled="
      f"{len(pool.unlabeled)}, excluded={len(pool.excluded)})"
    )
  if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
    raise StrategyError(f"{name}: budget must be an integer >= 1, got {budget!r}")
  if budget > len(cand) and not allow_all:
    raise StrategyError(
      f"{name}: budget {budget} exceeds the {len(cand)} queryable cases "
      "(pass allow_all=True to select them all)"
    )
  if "ids" not in stats:
    raise StrategyError(f"{name}: stats has no 'ids' entry")
  row = {str(i): k for k, i in enumerate(stats["ids"])}
  labeled = tuple(i for i in pool.labeled_ids if i in row)
  need = pool.unlabeled + (pool.labeled_ids if labeled_keys else ())
  missing = [i for i in need if i not in row]
  if missing:
    raise StrategyError(
      f"{name}: stats has no row for cases {missing[:10]}{' ...' if len(missing) > 10 else ''}"
    )
  absent = [k for k in (*keys, *labeled_keys) if k not in stats]
  if absent:
    raise StrategyError(f"{name}: stats lacks keys {absent} (has {sorted(stats)})")
  table = Table(stats, cand, labeled, pool.unlabeled, row)
  checks = [(k, "unlabeled") for k in keys] + [(k, "labeled") for k in labeled_keys]
  for k, which in checks:
    v = np.asarray(table.get(k, which), np.float64)
    if len(v) == 0:
      continue
    bad = ~np.isfinite(v.reshape(v.shape[0], -1)).all(axis=1)
    if bad.any():
      first = [getattr(table, which)[j] for j in np.flatnonzero(bad)[:5]]
      raise StrategyError(f"{name}: stats[{k!r}] has NaN/inf for case(s) {first}")
  return table, min(int(budget), len(cand))


# ---- shared selection helpers ------------------------------------------------------------


def top(scores: np.ndarray, k: int, highest: bool = True) -> np.ndarray:
  """Indices of the k highest (or lowest) scores; ties keep pool order (stable)."""
  s = np.asarray(scores, np.float64)
  return np.argsort(-s if highest else s, kind="stable")[:k]


def seed_from(rng: np.random.Generator) -> int:
  """An int seed for sklearn, drawn from the strategy's generator."""
  return int(rng.integers(0, 2**31 - 1))
