"""The active-learning pool as a value: who is labeled (and when), who is queryable.

The loop rebuilds a whole run from these JSON values. Strategies read a `Pool`, never
mutate it; each transition of a round is a method that returns the next pool:
`with_queried` (the oracle labelled the query) and `with_pseudo` (SSFT chose the
pseudo-labelled cases, which §3.4 bars from the next query). The held-out test split is
drawn here too, once per run, by `draw_split`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from sklearn import model_selection


@dataclasses.dataclass(frozen=True)
class Pool:
  """Case-id sets of one round.

  labeled:    id -> the round it was labeled in (0 = the one-shot init).
  unlabeled:  ids neither labeled nor in the test split, in a stable order.
  excluded:   unlabeled ids that may not be queried this round (paper §3.4: the cases
              pseudo-labelled in the previous round).
  pseudo:     ids pseudo-labelled in the last completed round (informative only).
  test:       the held-out split; never queried, never trained on.
  """

  labeled: Mapping[str, int]
  unlabeled: tuple[str, ...]
  excluded: tuple[str, ...] = ()
  pseudo: tuple[str, ...] = ()
  test: tuple[str, ...] = ()

  @classmethod
  def initial(cls, split: Mapping[str, Sequence[str]]) -> Pool:
    """Nothing labeled yet: the whole target pool is unlabeled (split from `draw_split`)."""
    return cls(labeled={}, unlabeled=tuple(split["pool"]), test=tuple(split["test"]))

  @property
  def labeled_ids(self) -> tuple[str, ...]:
    return tuple(self.labeled)

  @property
  def queryable(self) -> tuple[str, ...]:
    """Unlabeled ids minus the excluded ones, in pool order."""
    ex = set(self.excluded)
    return tuple(i for i in self.unlabeled if i not in ex)

  def with_queried(self, ids: Iterable[str], round_: int) -> Pool:
    """Moves `ids` from unlabeled to labeled at `round_`."""
    ids = list(ids)
    unlabeled = set(self.unlabeled)
    bad = [i for i in ids if i not in unlabeled]
    if bad:
      raise ValueError(f"cannot label ids that are not in the unlabeled pool: {bad}")
    chosen = set(ids)
    return dataclasses.replace(
      self,
      labeled={**self.labeled, **{i: round_ for i in ids}},
      unlabeled=tuple(i for i in self.unlabeled if i not in chosen),
      excluded=tuple(i for i in self.excluded if i not in chosen),
    )

  def without_exclusion(self) -> Pool:
    """This pool with every unlabeled case queryable (§3.4's bar lifted for one query)."""
    return dataclasses.replace(self, excluded=())

  def with_pseudo(self, ids: Iterable[str]) -> Pool:
    """The round's pseudo-labelled cases; §3.4 bars them from the next query only.

    The exclusion is replaced, not added to: a case pseudo-labelled in round r is
    queryable again in round r + 2 unless it is pseudo-labelled again in r + 1.
    """
    ids = tuple(dict.fromkeys(str(i) for i in ids))
    unlabeled = set(self.unlabeled)
    bad = [i for i in ids if i not in unlabeled]
    if bad:
      raise ValueError(f"cannot pseudo-label ids that are not in the unlabeled pool: {bad}")
    return dataclasses.replace(self, pseudo=ids, excluded=ids)

  def to_json(self) -> dict:
    return {
      "labeled": dict(self.labeled),
      "unlabeled": list(self.unlabeled),
      "excluded": list(self.excluded),
      "pseudo": list(self.pseudo),
      "test": list(self.test),
    }

  @classmethod
  def from_json(cls, d: Mapping) -> Pool:
    return cls(
      labeled={k: int(v) for k, v in d["labeled"].items()},
      unlabeled=tuple(d["unlabeled"]),
      excluded=tuple(d.get("excluded", ())),
      pseudo=tuple(d.get("pseudo", ())),
      test=tuple(d.get("test", ())),
    )


def draw_split(
  case_ids: Sequence[str],
  labeled_ids: Iterable[str],
  test_fraction: float,
  seed: int,
  groups: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
  """{"test": ids, "pool": ids}: the held-out test split, drawn by seed.

  Test cases come from the cases with a label (they are scored); their number is
  round(test_fraction × all cases), at least 1. The pool keeps every other case in
  dataset order. Stored once per run by the caller, so a resume cannot redraw it.

  groups (id -> stratum, e.g. the scanner; `data.case_groups`): the test split keeps
  each stratum's share of the labeled cases (sklearn's stratified split), so a small
  test set still holds the minority scanners. Without it, a plain random draw.
  """
  labeled = sorted(labeled_ids)
  n_test = max(1, round(test_fraction * len(case_ids))) if labeled else 0
  if groups is None or not labeled:
    rng = np.random.default_rng([seed, 7])
    test = sorted(rng.permutation(labeled)[:n_test].tolist())
  else:
    strata = [groups[c] for c in labeled]
    _, test = model_selection.train_test_split(
      labeled, test_size=n_test, random_state=seed, stratify=strata
    )
    test = sorted(test)
  held = set(test)
  return {"test": test, "pool": [c for c in case_ids if c not in held]}
