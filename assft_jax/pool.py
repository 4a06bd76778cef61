"""The active-learning pool as a value: who is labeled (and when), who is queryable.

The loop rebuilds a whole run from these JSON values (STYLE.md §6). Strategies read a
`Pool`, never mutate it; the loop derives the next pool with `with_queried`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping


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
    bad = [i for i in ids if i not in set(self.unlabeled)]
    if bad:
      raise ValueError(f"cannot label ids that are not in the unlabeled pool: {bad}")
    labeled = dict(self.labeled)
    labeled.update({i: round_ for i in ids})
    chosen = set(ids)
    return dataclasses.replace(
      self,
      labeled=labeled,
      unlabeled=tuple(i for i in self.unlabeled if i not in chosen),
      excluded=tuple(i for i in self.excluded if i not in chosen),
    )

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

  def dumps(self) -> str:
    return json.dumps(self.to_json(), indent=1, sort_keys=True)
