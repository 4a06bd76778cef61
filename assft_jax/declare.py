"""How a config field is declared (`option`) and read back (`Option`, `walk`, `from_tree`).

`assft_jax.config` declares every run setting with `option(default, help=..., choices=...)`;
`walk` turns the declarations into `Option`s, from which `assft_jax.flags` defines the absl
flags and `config.validate` checks the choices. A field's type picks its flag's kind: str,
int, float, bool; a str with choices is an enum; tuple[T, ...] is a comma list of T.

The help sits in the field's metadata rather than in an attribute docstring read back
with `ast`: `dataclasses.fields` sees it at run time without the source, and one call
declares the help and the choices together.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any


def option(
  default: Any = dataclasses.MISSING,
  *,
  help: str,
  choices: tuple[str, ...] | None = None,
  flag: bool = True,
) -> Any:
  """A config field declared with its flag's help text (and its choices, for an enum).

  flag=False declares a field that no flag of its own sets (al.mode, which
  --lower_bound/--upper_bound set).
  """
  if not help.strip():
    raise TypeError("every option needs help text")
  return dataclasses.field(
    default=default, metadata={"help": help, "choices": choices, "flag": flag}
  )


@dataclasses.dataclass(frozen=True)
class Option:
  """One declared field of a config tree: where it sits and how its flag parses."""

  section: str | None
  """The root's field that holds it (RunConfig: "data", "model", "train", "al", "eval");
  None for the root's own."""
  name: str
  """The field's name, which is also its flag's name."""
  kind: type
  """str, int, float or bool; for a list, the type of its elements."""
  is_list: bool
  """tuple[kind, ...]: a comma-separated list flag."""
  default: Any
  """The field's default; None for a required one (RunConfig's workdir)."""
  help: str
  choices: tuple[str, ...] | None
  flag: bool

  def value(self, cfg: Any) -> Any:
    return getattr(getattr(cfg, self.section) if self.section else cfg, self.name)


def _kind(tp: Any) -> tuple[type, bool]:
  """(element type, is_list) of a field type such as `tuple[int, ...] | None`."""
  if isinstance(tp, types.UnionType):  # X | None: None is the flag's "unset"
    (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
  is_list = typing.get_origin(tp) is tuple
  if is_list:
    tp, _ = typing.get_args(tp)
  if tp not in (str, int, float, bool):
    raise TypeError(f"no flag kind for field type {tp!r}")
  return tp, is_list


def walk(root: type) -> tuple[Option, ...]:
  """Every declared field of the dataclass `root`, in field order (its own, then each
  section's: a field whose type is a dataclass is a section, one level deep)."""
  out = []

  def visit(cls: type, section: str | None) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
      if dataclasses.is_dataclass(hints[f.name]):
        visit(hints[f.name], f.name)
        continue
      if "help" not in f.metadata:
        raise TypeError(f"{cls.__name__}.{f.name}: declare it with option(...)")
      kind, is_list = _kind(hints[f.name])
      if f.metadata["choices"] and (kind is not str or is_list):
        raise TypeError(f"{cls.__name__}.{f.name}: choices need a str field")
      default = None if f.default is dataclasses.MISSING else f.default
      meta = {k: f.metadata[k] for k in ("help", "choices", "flag")}
      out.append(Option(section, f.name, kind, is_list, default, **meta))

  visit(root, None)
  return tuple(out)


def from_tree(cls: type, d: Mapping[str, Any]) -> Any:
  """The dataclass `cls` from its JSON tree (lists back to tuples); keys it does not
  declare are ignored, fields the tree lacks take their defaults."""
  hints = typing.get_type_hints(cls)
  values = {}
  for f in dataclasses.fields(cls):
    if f.name not in d:
      continue
    v = d[f.name]
    if dataclasses.is_dataclass(hints[f.name]):
      v = from_tree(hints[f.name], v)
    elif isinstance(v, list):
      v = tuple(v)
    values[f.name] = v
  return cls(**values)
