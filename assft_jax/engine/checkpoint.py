"""orbax checkpoints of the train state dict, one numbered step per save.

`orbax.checkpoint.CheckpointManager` writes each step into a temporary directory and
renames it when complete, so a crash mid-save never leaves a half checkpoint that
`restore_state` would pick up (atomic). Arrays are stored bit-exactly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

State = dict[str, Any]


def _manager(directory: str | os.PathLike, max_to_keep: int | None = 2) -> ocp.CheckpointManager:
  opts = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
  return ocp.CheckpointManager(Path(directory).absolute(), options=opts)


def save_state(
  directory: str | os.PathLike,
  state: State,
  *,
  step: int | None = None,
  max_to_keep: int | None = 2,
) -> int:
  """Saves `state` as checkpoint `step` (default int(state["step"])) under `directory`,
  replacing an existing checkpoint of that step; keeps the newest `max_to_keep`.
  Blocks until written. Returns the step."""
  step = int(state["step"]) if step is None else int(step)
  with _manager(directory, max_to_keep) as mngr:
    if step in mngr.all_steps():
      mngr.delete(step)
    mngr.save(step, args=ocp.args.StandardSave(state))
    mngr.wait_until_finished()
  return step


def latest_step(directory: str | os.PathLike) -> int | None:
  """The newest complete checkpoint step under `directory`, or None."""
  if not Path(directory).is_dir():
    return None
  with _manager(directory) as mngr:
    return mngr.latest_step()


def restore_state(
  directory: str | os.PathLike, target: State | None = None, *, step: int | None = None
) -> State:
  """Restores checkpoint `step` (default the latest) from `directory`.

  target: a state of the same structure (e.g. `create_state(...)`): the result then has
  its tree structure (optax namedtuples), dtypes and shardings. Without it, the raw
  tree (dicts/lists of arrays) is returned. Raises FileNotFoundError if none exists.
  """
  with _manager(directory) as mngr:
    step = mngr.latest_step() if step is None else step
    if step is None or step not in mngr.all_steps():
      raise FileNotFoundError(f"no checkpoint (step {step}) under {directory}")
    if target is None:
      return mngr.restore(step, args=ocp.args.StandardRestore())
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    return mngr.restore(step, args=ocp.args.StandardRestore(abstract))
