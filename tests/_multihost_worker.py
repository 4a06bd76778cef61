"""One process of tests/test_multihost.py (no tests here).

  python -m tests._multihost_worker OUT single
  python -m tests._multihost_worker OUT multi PROCESS_ID PORT

`single`: one process, one CPU device, the whole global batch. `multi`: one of 2
processes joined by `jax.distributed` (coordinator 127.0.0.1:PORT), one CPU device each;
the process feeds only its own sample of each global batch. Both run the engine's train
step twice from the same variables, then `fine_tune` over the same 2 batches, and write
OUT/result_<tag>.json {losses, fine_tune_loss, processes, devices, shard_rows} and
OUT/state_<tag>.npz (params/... and batch_stats/... after the 2 steps, "init/..." the
start params). `multi` then saves the round's checkpoints from both processes,
`engine.save_state(OUT/state, replace=True)` and then `workdir.save_model(OUT, 1, ...)`,
and after each writes OUT/saved_<what>_<tag>.json {"inode": the inode this process sees
at that folder as its save returns}.
"""

import sys
from pathlib import Path

import jax
import numpy as np

TAG_SINGLE = "single"
N_PROCESSES = 2
BATCH = 2  # global batch: one sample per process
SIZE = 16


def model_and_optimizer():
  """The tiny network (2 levels, 4 filters) and AdamW of the test. conv_impl "s2d" in
  both runs: "auto" picks the oneDNN convs for the one-process reference but not across
  processes (they are not partitioned over the batch), and the test compares the
  processes, not the conv kernels (those are in test_onednn.py)."""
  from assft_jax.engine import make_optimizer
  from assft_jax.models import SegResNetDS

  model = SegResNetDS(init_filters=4, out_channels=2, blocks_down=(1, 1), conv_impl="s2d")
  return model, make_optimizer(1e-3, 10)


def flat(tree, prefix):
  """{prefix/keypath: array} of a pytree, for npz."""
  return {
    f"{prefix}/{jax.tree_util.keystr(p)}": np.asarray(x)
    for p, x in jax.tree_util.tree_leaves_with_path(tree)
  }


def main(out: Path, mode: str, pid: int = 0, port: int = 0) -> None:
  if mode == "multi":
    jax.distributed.initialize(
      coordinator_address=f"127.0.0.1:{port}",
      num_processes=N_PROCESSES,
      process_id=pid,
      initialization_timeout=120,
    )
  # imported after initialize: nothing may touch the backend before it
  from assft_jax import atomic, workdir
  from assft_jax.engine import (
    create_state,
    fine_tune,
    make_mesh,
    make_train_step,
    save_state,
    shard_batch,
    variables_of,
  )
  from tests._engine_helpers import fast_variables, phantom_batch

  module, tx = model_and_optimizer()
  variables = fast_variables(module, SIZE)
  mesh = make_mesh()  # every global device: 2 processes x 1 device, or 1
  step = make_train_step(module, tx, mesh, 2)
  # The global batches are drawn from seeded generators; a process keeps only its rows
  # (process p holds global row p, as `make_array_from_process_local_data` expects).
  share = slice(pid, pid + 1) if mode == "multi" else slice(None)
  batches = [
    {k: v[share] for k, v in phantom_batch(np.random.default_rng(i), BATCH, SIZE).items()}
    for i in range(2)
  ]
  state = create_state(variables, tx)
  losses = []
  for b in batches:  # the second step sees the first's params and batch_stats
    state, metrics = step(state, b, jax.random.key(0))
    losses.append(float(metrics["loss"]))
  placed = shard_batch(batches[0], mesh)["image"]
  rows = [s.index[0].indices(BATCH)[:2] for s in placed.addressable_shards]
  _, history = fine_tune(
    create_state(variables, tx), step, iter(batches), 1, 2, jax.random.key(0), progress=False
  )
  tag = f"p{pid}" if mode == "multi" else TAG_SINGLE
  result = {
    "losses": losses,
    "fine_tune_loss": history[0]["loss"],
    "processes": jax.process_count(),
    "devices": [jax.device_count(), jax.local_device_count()],
    "global_image_shape": list(placed.shape),
    "shard_rows": rows,
  }
  host = jax.device_get({"params": state["params"], "batch_stats": state["batch_stats"]})
  arrays = flat(host["params"], "params") | flat(host["batch_stats"], "batch_stats")
  arrays |= flat(variables["params"], "init")
  atomic.write_npz(out / f"state_{tag}.npz", arrays, compressed=False)
  atomic.write_json(out / f"result_{tag}.json", result)
  if mode == "multi":
    save_state(out / "state", state, replace=True)
    atomic.write_json(out / f"saved_state_{tag}.json", {"inode": (out / "state").stat().st_ino})
    workdir.save_model(out, 1, module, variables_of(state))
    inode = workdir.model_dir(out, 1).stat().st_ino
    atomic.write_json(out / f"saved_model_{tag}.json", {"inode": inode})


if __name__ == "__main__":
  args = sys.argv[1:]
  main(Path(args[0]), args[1], *(int(a) for a in args[2:]))
