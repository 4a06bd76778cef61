"""orbax checkpoints of the train state dict, one numbered step per save.

`orbax.checkpoint.CheckpointManager` writes each step into a temporary directory and
renames it when complete, so a crash mid-save never leaves a half checkpoint that
`restore_state` would pick up (atomic). Arrays are stored bit-exactly.

Several processes (`jax.distributed`): the engine's state is replicated, so every process
holds all of it; process 0 writes it alone and the others wait for it. (Each process
writing its own copy would race its folder into place, and orbax's cooperative save
writes the data from process 0 anyway.)
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from assft_jax.atomic import atomic_dir
from assft_jax.models.checkpoint import on_process_zero, process_local

State = dict[str, Any]


def _manager(directory: str | os.PathLike, max_to_keep: int | None = 2) -> ocp.CheckpointManager:
  # This process alone (orbax then leaves creating the folder to the caller).
  opts = ocp.CheckpointManagerOptions(
    max_to_keep=max_to_keep, create=False, multiprocessing_options=process_local()
  )
  return ocp.CheckpointManager(Path(directory).absolute(), options=opts)


def save_state(
  directory: str | os.PathLike,
  state: State,
  *,
  step: int | None = None,
  max_to_keep: int | None = 2,
  replace: bool = False,
) -> int:
  """Saves `state` as checkpoint `step` (default int(state["step"])) under `directory`,
  replacing an existing checkpoint of that step; keeps the newest `max_to_keep`.
  replace=True swaps the whole `directory` (atomic) for one holding this checkpoint only.
  Call it on every process; process 0 writes. Blocks until written. Returns the step."""
  step = int(state["step"]) if step is None else int(step)
  host = jax.device_get(state)  # replicated: this process holds the whole state

  def write() -> None:
    place = atomic_dir(directory) if replace else contextlib.nullcontext(Path(directory))
    with place as where:
      where.mkdir(parents=True, exist_ok=True)
      with _manager(where, max_to_keep) as mngr:
        if step in mngr.all_steps():
          mngr.delete(step)
        mngr.save(step, args=ocp.args.StandardSave(host))
        mngr.wait_until_finished()

  on_process_zero(write, f"assft_jax.save_state {step}")
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
