"""The one pretrained-weights format: DIR/model.json + DIR/variables (orbax pytree).

Written by the weight port (CT-FM), the phantom pretraining step and `save_pretrained`;
read only by `load_pretrained`. model.json is `model_config(module)`:
`{"arch": "segresnet"|"encoder", "init_filters", "in_channels", "blocks_down", "norm",
"conv_impl", "dtype", "remat"[, "out_channels", "dsdepth", "blocks_up"]}`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import linen as nn

from assft_jax.errors import AssftError
from assft_jax.models.segresnet import SegResNetDS, abstract_variables, build_model, init_variables


class CheckpointError(AssftError, ValueError):
  """A pretrained directory that cannot be read (names the path and what is wrong)."""


def save_pretrained(
  directory: str | os.PathLike, config: Mapping[str, Any], variables: Mapping
) -> Path:
  """Writes `variables` ({"params", "batch_stats"?}) and `config` to `directory`.

  Atomic: everything goes to a sibling temp dir that is renamed into place at the end,
  so a crash never leaves a half-written checkpoint under `directory`.
  """
  directory = Path(directory).absolute()
  directory.parent.mkdir(parents=True, exist_ok=True)
  tree = {
    k: jax.tree.map(np.asarray, dict(variables[k]))
    for k in ("params", "batch_stats")
    if k in variables
  }
  tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
  try:
    ckptr = ocp.PyTreeCheckpointer()
    ckptr.save(tmp / "variables", tree)
    (tmp / "model.json").write_text(json.dumps(dict(config), indent=1, sort_keys=True))
    if directory.exists():
      old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old.", dir=directory.parent))
      os.replace(directory, old / "x")
      os.replace(tmp, directory)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, directory)
  finally:
    if tmp.exists():
      shutil.rmtree(tmp, ignore_errors=True)
  return directory


def read_config(directory: str | os.PathLike) -> dict:
  """model.json of a pretrained directory (CheckpointError if absent or unreadable)."""
  path = Path(directory) / "model.json"
  if not path.is_file():
    raise CheckpointError(f"{directory}: not a pretrained model directory (no model.json)")
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{path}: invalid JSON ({e})") from None


def _restore(directory: Path, module: nn.Module) -> dict:
  abstract = {k: v for k, v in abstract_variables(module).items() if k in ("params", "batch_stats")}
  path = directory / "variables"
  if not path.exists():
    raise CheckpointError(f"{directory}: no 'variables' checkpoint next to model.json")
  try:
    restored = ocp.PyTreeCheckpointer().restore(
      path,
      args=ocp.args.PyTreeRestore(
        item=abstract,
        restore_args=jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract),
      ),
    )
  except Exception as e:  # orbax raises many types; one clear message
    raise CheckpointError(
      f"{directory}: checkpoint does not match model.json ({type(e).__name__}: {str(e)[:300]})"
    ) from None
  bad = [
    f"{jax.tree_util.keystr(p)}: {np.shape(a)} != {b.shape}"
    for (p, a), b in zip(jax.tree_util.tree_leaves_with_path(restored), jax.tree.leaves(abstract))
    if tuple(np.shape(a)) != tuple(b.shape)
  ]
  if bad:
    raise CheckpointError(f"{directory}: mis-shaped variables: {'; '.join(bad[:10])}")
  return jax.tree.map(jax.numpy.asarray, restored)


def load_pretrained(
  directory: str | os.PathLike,
  *,
  out_channels: int | None = None,
  rng: jax.Array | None = None,
  conv_impl: str | None = None,
) -> tuple[nn.Module, dict]:
  """(module, variables) from a directory written by save_pretrained / weights_port.

  - a full segresnet: as saved; if `out_channels` differs from the saved one, the
    deep-supervision heads are re-initialised (He) and everything else is kept.
  - encoder-only weights: with `out_channels=None`, the SegResEncoder itself; otherwise a
    SegResNetDS whose encoder is the saved one and whose decoder is freshly He-initialised
    from `rng` (paper §3.5; default rng = key 0).
  `conv_impl` overrides the saved implementation (weights are the same for both).
  """
  directory = Path(directory).absolute()
  cfg = read_config(directory)
  if conv_impl is not None:
    cfg["conv_impl"] = conv_impl
  rng = jax.random.key(0) if rng is None else rng
  try:
    saved = build_model(cfg)
  except (TypeError, ValueError) as e:
    raise CheckpointError(f"{directory}/model.json: bad model config ({e})") from None
  variables = _restore(directory, saved)
  if out_channels is None or (
    isinstance(saved, SegResNetDS) and out_channels == saved.out_channels
  ):
    return saved, variables
  full_cfg = dict(cfg, arch="segresnet", out_channels=int(out_channels))
  module = build_model(full_cfg)
  fresh = init_variables(module, rng)
  if cfg.get("arch") == "encoder":
    for coll in variables:
      fresh[coll] = dict(fresh[coll], encoder=variables[coll])
    return module, fresh
  # full model, new class count: keep everything but the heads
  params = {k: dict(v) for k, v in variables["params"].items()}
  for name, level in params.items():
    if "head" in level:
      level["head"] = fresh["params"][name]["head"]
  return module, dict(variables, params=params)


__all__ = ["CheckpointError", "load_pretrained", "read_config", "save_pretrained"]
