"""Class selection: which of a dataset's declared classes a run segments, and their names.

Three settings, each naming declared classes by name or by value ("3"):
  label_map    {old: new}: renames; equal new names merge, the new name "background" drops
  drop_labels  these classes become background
  keep_labels  only these classes stay; every other one becomes background

keep_labels and drop_labels exclude each other (keep already drops every class it does
not name, so a drop list beside it is either redundant or a contradiction). A label_map
entry for a class that keep_labels drops is refused too: the rename would vanish
silently. A name the dataset does not declare is a DataError naming the flag and listing
the declared classes. The classes left are renumbered contiguously in their declared
order, background first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .errors import DataError


def parse_label_map(items: Sequence[str]) -> dict[str, str]:
  """The --label_map words ["old:new", ...] -> {old: new}; DataError on a malformed one."""
  out = {}
  for item in items:
    old, sep, new = (x.strip() for x in item.partition(":"))
    if not (sep and old and new) or ":" in new:
      raise DataError(f"--label_map: {item!r} is not old:new (e.g. kidney_left:kidney)")
    out[old] = new
  return out


def remap_classes(
  classes: Sequence[str],
  label_map: Mapping[str | int, str] | None,
  drop: Sequence[str | int],
  keep: Sequence[str | int] = (),
) -> tuple[tuple[str, ...], tuple[int, ...] | None]:
  """(new class names, lookup table declared value -> new index), or (classes, None)
  when nothing is selected. `classes` are the declared names, indexed by value."""
  if not label_map and not drop and not keep:
    return tuple(classes), None
  if keep and drop:
    raise DataError(
      "--keep_labels and --drop_labels exclude each other: --keep_labels already makes "
      "every class it does not name background"
    )

  def value(k, flag) -> int:
    if isinstance(k, (int, np.integer)) or (isinstance(k, str) and k.isdigit()):
      if 0 <= int(k) < len(classes):
        return int(k)
    elif k in classes:
      return classes.index(k)
    raise DataError(f"{flag}: unknown class '{k}' (declared: {', '.join(classes)})")

  renamed = {value(k, "--label_map"): str(v) for k, v in (label_map or {}).items()}
  dropped = {value(k, "--drop_labels") for k in drop}
  if keep:
    kept = {value(k, "--keep_labels") for k in keep}
    dropped = set(range(1, len(classes))) - kept
    lost = sorted(classes[v] for v in renamed if v in dropped)
    if lost:
      raise DataError(
        f"--label_map renames {', '.join(lost)}, which --keep_labels drops "
        "(name it in --keep_labels too)"
      )
  new_name = [renamed.get(v, n) for v, n in enumerate(classes)]
  for v in dropped:
    new_name[v] = "background"
  new_name[0] = "background"
  names = ["background"]
  for n in new_name[1:]:
    if n != "background" and n not in names:
      names.append(n)
  return tuple(names), tuple(names.index(n) for n in new_name)
