"""The port as a table: MONAI state_dict key <-> Flax variable path, plus layout transforms.

Pure numpy; no torch. `key_table(config)` lists every tensor of the model described by
`config` (a `model_config` dict); `to_flax` / `to_torch` apply it in either direction.

  torch key (encoder; full model prefixes "encoder.")     flax (collection, path)       transform
  conv_init.weight                                       params conv_init/kernel        conv
  layers.{i}.blocks.{j}.conv{n}.weight                   params layers_i/blocks_j/convn/kernel  conv
  layers.{i}.blocks.{j}.norm{n}.weight | .bias           params .../normn/scale | bias  -
  layers.{i}.blocks.{j}.norm{n}.running_mean | _var      batch_stats .../normn/mean | var  -
  layers.{i}.downsample.weight (i < L-1)                 params layers_i/downsample/kernel  conv
  up_layers.{i}.upsample.deconv.weight                   params up_layers_i/upsample/kernel deconv
  up_layers.{i}.blocks.{j}.*                             as the encoder blocks
  up_layers.{i}.head.weight | .bias                      params up_layers_i/head/kernel|bias conv|-
  *.num_batches_tracked                                  dropped (not used in eval or with momentum)

conv:   torch (O, I, kd, kh, kw) -> flax (kd, kh, kw, I, O)      = transpose(2, 3, 4, 1, 0)
deconv: torch (I, O, kd, kh, kw) -> flax (kd, kh, kw, I, O)      = transpose(2, 3, 4, 0, 1)
        (no spatial flip: the Flax UpConv flips in its native path; checked by parity)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import NamedTuple

import numpy as np

from assft_jax.errors import AssftError

CONV_PERM = (2, 3, 4, 1, 0)
DECONV_PERM = (2, 3, 4, 0, 1)


class PortError(AssftError, ValueError):
  """A state_dict that does not match the expected architecture (lists every problem)."""


class Entry(NamedTuple):
  torch_key: str
  collection: str  # "params" | "batch_stats"
  path: tuple[str, ...]  # flax path inside the collection
  perm: tuple[int, ...] | None  # torch -> flax transpose, None = identity


def _norm(tk: str, fp: tuple, norm: str) -> Iterator[Entry]:
  yield Entry(f"{tk}.weight", "params", fp + ("scale",), None)
  yield Entry(f"{tk}.bias", "params", fp + ("bias",), None)
  if norm == "batch":
    yield Entry(f"{tk}.running_mean", "batch_stats", fp + ("mean",), None)
    yield Entry(f"{tk}.running_var", "batch_stats", fp + ("var",), None)


def block_entries(tk: str, fp: tuple, norm: str) -> Iterator[Entry]:
  """Entries of one SegResBlock: torch prefix `tk` (e.g. "layers.1.blocks.0") -> flax `fp`."""
  for n in (1, 2):
    yield from _norm(f"{tk}.norm{n}", fp + (f"norm{n}",), norm)
    yield Entry(f"{tk}.conv{n}.weight", "params", fp + (f"conv{n}", "kernel"), CONV_PERM)


def _encoder(tp: str, fp: tuple, cfg: Mapping) -> Iterator[Entry]:
  yield Entry(f"{tp}conv_init.weight", "params", fp + ("conv_init", "kernel"), CONV_PERM)
  blocks_down = cfg["blocks_down"]
  for i, nb in enumerate(blocks_down):
    lp = fp + (f"layers_{i}",)
    for j in range(nb):
      yield from block_entries(f"{tp}layers.{i}.blocks.{j}", lp + (f"blocks_{j}",), cfg["norm"])
    if i < len(blocks_down) - 1:
      yield Entry(
        f"{tp}layers.{i}.downsample.weight", "params", lp + ("downsample", "kernel"), CONV_PERM
      )


def key_table(cfg: Mapping) -> list[Entry]:
  """Every tensor of the model `cfg` (model_config dict) in a fixed order."""
  if cfg.get("arch", "segresnet") == "encoder":
    return list(_encoder("", (), cfg))
  table = list(_encoder("encoder.", ("encoder",), cfg))
  n_up = len(cfg["blocks_down"]) - 1
  blocks_up = cfg.get("blocks_up") or (1,) * n_up
  dsdepth = max(int(cfg.get("dsdepth", 1)), 1)
  for i in range(n_up):
    lp = (f"up_layers_{i}",)
    table.append(
      Entry(
        f"up_layers.{i}.upsample.deconv.weight", "params", lp + ("upsample", "kernel"), DECONV_PERM
      )
    )
    for j in range(blocks_up[i]):
      table.extend(block_entries(f"up_layers.{i}.blocks.{j}", lp + (f"blocks_{j}",), cfg["norm"]))
    if n_up - i <= dsdepth:
      table.append(
        Entry(f"up_layers.{i}.head.weight", "params", lp + ("head", "kernel"), CONV_PERM)
      )
      table.append(Entry(f"up_layers.{i}.head.bias", "params", lp + ("head", "bias"), None))
  return table


def _expected_torch_shape(e: Entry, flax_shape: tuple) -> tuple:
  if e.perm is None:
    return tuple(flax_shape)
  inv = np.argsort(e.perm)
  return tuple(flax_shape[k] for k in inv)


def to_flax(
  state_dict: Mapping[str, np.ndarray],
  cfg: Mapping,
  shapes: Mapping | None = None,
  strict: bool = True,
) -> dict:
  """torch-keyed arrays -> {"params": ..., "batch_stats": ...} (nested dicts of float32).

  `shapes`: optional flax variables (or their shapes) to check against. `strict`: missing
  and unexpected keys are errors (mis-shaped ones always are); otherwise missing keys are
  left out of the result and unexpected ones ignored.
  """
  return port(state_dict, key_table(cfg), shapes, strict)


def port(
  state_dict: Mapping[str, np.ndarray],
  table: list[Entry],
  shapes: Mapping | None = None,
  strict: bool = True,
) -> dict:
  """`to_flax` over an explicit table (e.g. `list(block_entries(...))` for one block)."""
  sd = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
  known = {e.torch_key for e in table}
  missing = [e.torch_key for e in table if e.torch_key not in sd]
  unexpected = sorted(k for k in sd if k not in known)
  bad_shape = []
  out: dict = {"params": {}, "batch_stats": {}}
  for e in table:
    if e.torch_key not in sd:
      continue
    a = np.asarray(sd[e.torch_key], dtype=np.float32)
    if e.perm is not None:
      if a.ndim != len(e.perm):
        bad_shape.append(
          f"{e.torch_key}: {a.ndim}-d tensor {a.shape}, expected {len(e.perm)}-d (a 3D conv kernel)"
        )
        continue
      a = np.ascontiguousarray(a.transpose(e.perm))
    if shapes is not None:
      want = tuple(_get(shapes[e.collection], e.path).shape)
      if a.shape != want:
        bad_shape.append(
          f"{e.torch_key}: shape {tuple(sd[e.torch_key].shape)}, expected "
          f"{_expected_torch_shape(e, want)}"
        )
        continue
    _set(out[e.collection], e.path, a)
  problems = []
  if strict and missing:
    problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
  if strict and unexpected:
    problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
  if bad_shape:
    problems.append(f"mis-shaped keys ({len(bad_shape)}): {'; '.join(bad_shape)}")
  if problems:
    raise PortError("state_dict does not match the architecture: " + " | ".join(problems))
  if not out["batch_stats"]:
    del out["batch_stats"]
  return out


def to_torch(variables: Mapping, cfg: Mapping) -> dict[str, np.ndarray]:
  """Flax variables -> MONAI state_dict (numpy; num_batches_tracked = 0 for BatchNorm)."""
  sd = {}
  for e in key_table(cfg):
    a = np.asarray(_get(variables[e.collection], e.path), dtype=np.float32)
    if e.perm is not None:
      a = a.transpose(np.argsort(e.perm))
    sd[e.torch_key] = np.ascontiguousarray(a)
    if e.torch_key.endswith("running_var"):
      sd[e.torch_key[: -len("running_var")] + "num_batches_tracked"] = np.zeros((), np.int64)
  return sd


def _get(tree: Mapping, path: tuple):
  for p in path:
    tree = tree[p]
  return tree


def _set(tree: dict, path: tuple, value) -> None:
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value
