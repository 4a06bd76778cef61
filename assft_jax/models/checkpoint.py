"""The one pretrained-weights format: DIR/model.json + DIR/variables (orbax pytree).

Written by the weight port (CT-FM), the phantom pretraining step and `save_pretrained`;
read only by `load_pretrained`. model.json is `model_config(module)`:
`{"arch": "segresnet"|"encoder", "init_filters", "in_channels", "blocks_down", "norm",
"conv_impl", "dtype", "remat"[, "out_channels", "dsdepth", "blocks_up"]}`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import linen as nn
from jax.experimental import multihost_utils

from assft_jax.atomic import atomic_dir
from assft_jax.errors import AssftError
from assft_jax.models.segresnet import (
  SegResEncoder,
  abstract_variables,
  build_model,
  init_variables,
)


class CheckpointError(AssftError, ValueError):
  """A pretrained directory that cannot be read (names the path and what is wrong)."""


def save_pretrained(
  directory: str | os.PathLike, config: Mapping[str, Any], variables: Mapping
) -> Path:
  """Writes `variables` ({"params", "batch_stats"?}) and `config` to `directory`.

  Atomic (`atomic.atomic_dir`): a crash never leaves a half-written checkpoint there.
  """
  directory = Path(directory).absolute()
  tree = {
    k: jax.tree.map(np.asarray, dict(variables[k]))
    for k in ("params", "batch_stats")
    if k in variables
  }

  def write() -> None:
    with atomic_dir(directory) as tmp:
      _checkpointer().save(tmp / "variables", tree)
      (tmp / "model.json").write_text(json.dumps(dict(config), indent=1, sort_keys=True))

  on_process_zero(write, "assft_jax.save_pretrained")
  return directory


def on_process_zero(write: Callable[[], None], tag: str) -> None:
  """Runs `write` on process 0 only; with several processes (jax.distributed) the others
  wait for it at a barrier named `tag`. Every process holds the same replicated state,
  and each swapping in its own folder would race."""
  if jax.process_index() == 0:
    write()
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(tag)


def process_local() -> ocp.options.MultiprocessingOptions:
  """orbax options for this process alone: orbax's default expects every process in each
  save and restore, and a checkpoint here is written by one (`on_process_zero`)."""
  me = jax.process_index()
  return ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})


def _checkpointer() -> ocp.Checkpointer:
  mp = process_local()
  return ocp.Checkpointer(
    ocp.PyTreeCheckpointHandler(multiprocessing_options=mp), multiprocessing_options=mp
  )


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
    restored = _checkpointer().restore(
      path,
      args=ocp.args.PyTreeRestore(
        item=abstract,
        restore_args=jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract),
      ),
    )
  except Exception as e:  # orbax raises many types; one clear message
    raise CheckpointError(
      f"{directory}: checkpoint cannot be read: damaged, truncated or not matching model.json ({type(e).__name__}: {str(e)[:300]})"
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
  dsdepth: int | None = None,
) -> tuple[nn.Module, dict]:
  """(module, variables) from a directory written by save_pretrained / weights_port.

  - a full segresnet: as saved, unless `out_channels` or `dsdepth` differ from the saved
    ones; then every saved variable the new model has is kept, and the heads the saved
    file does not provide (all of them for a new class count) are He-initialised.
  - encoder-only weights: with `out_channels=None`, the SegResEncoder itself (`dsdepth`
    is ignored: there is no decoder); otherwise a SegResNetDS whose encoder is the saved
    one and whose decoder is freshly He-initialised (paper §3.5).
  `conv_impl` overrides the saved implementation (weights are the same for both).
  Fresh weights are drawn from `rng` (default key 0).
  """
  directory = Path(directory).absolute()
  cfg = read_config(directory)
  if conv_impl is not None:
    cfg["conv_impl"] = conv_impl
  try:
    saved = build_model(cfg)
  except (TypeError, ValueError) as e:
    raise CheckpointError(f"{directory}/model.json: bad model config ({e})") from None
  variables = _restore(directory, saved)
  if isinstance(saved, SegResEncoder) and out_channels is None:
    return saved, variables
  target = dict(cfg, arch="segresnet")
  if out_channels is not None:
    target["out_channels"] = int(out_channels)
  if dsdepth is not None:
    target["dsdepth"] = int(dsdepth)
  module = build_model(target)
  if module == saved:
    return saved, variables
  fresh = init_variables(module, jax.random.key(0) if rng is None else rng)
  if isinstance(saved, SegResEncoder):
    return module, {coll: dict(fresh[coll], encoder=variables[coll]) for coll in variables}
  keep_heads = module.out_channels == saved.out_channels
  return module, {coll: _graft(variables[coll], fresh[coll], keep_heads) for coll in fresh}


def _graft(saved: Mapping, fresh: Mapping, keep_heads: bool) -> dict:
  """One collection of a full model: the saved subtrees, with the heads of `fresh`'s
  levels taken from `saved` where it has them (and `keep_heads`), else from `fresh`;
  heads `fresh` does not have (a smaller dsdepth) are dropped."""
  out = {}
  for name, level in fresh.items():
    old = saved[name]
    new = {k: v for k, v in old.items() if k != "head"}
    if "head" in level:
      new["head"] = old["head"] if keep_heads and "head" in old else level["head"]
    out[name] = new
  return out


__all__ = ["CheckpointError", "load_pretrained", "read_config", "save_pretrained"]
