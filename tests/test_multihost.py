"""Past one machine: the engine on 2 processes joined by `jax.distributed` on localhost.

Two worker processes (tests/_multihost_worker.py, coordinator 127.0.0.1:<free port>, one
CPU device each, jax's default gloo CPU collectives) run the train step twice on a
global batch of 2 of which each loads only its own sample, then `fine_tune`, then save
the round's checkpoints. A third process runs the same on one device with the whole
batch: the reference. The 3 processes start at once, once per module (~1 min on 2
busy cores).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests import _multihost_worker as worker

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 600


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """(OUT, {tag: the worker's output if it failed}) for tags "single", "p0", "p1". OUT holds
  their result_/state_/saved_ files and the saved checkpoints. A failed worker fails the
  tests that need its files, with its output."""
  out = tmp_path_factory.mktemp("multihost")
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    XLA_FLAGS="--xla_force_host_platform_device_count=1",
    PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
  )
  port = _free_port()
  cmd = [sys.executable, "-m", "tests._multihost_worker", str(out)]
  argv = {worker.TAG_SINGLE: [worker.TAG_SINGLE]}
  argv |= {f"p{p}": ["multi", str(p), str(port)] for p in range(2)}
  procs = {
    tag: subprocess.Popen(
      cmd + a, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    for tag, a in argv.items()
  }
  failed = {}
  try:
    for tag, p in procs.items():
      log = p.communicate(timeout=TIMEOUT_S)[0].decode(errors="replace")
      if p.returncode:
        failed[tag] = log[-3000:]
  finally:
    for p in procs.values():  # a peer stuck in a collective after the other failed
      if p.poll() is None:
        p.kill()
        p.wait()
  return out, failed


def _json(runs, name: str, tag: str) -> dict:
  out, failed = runs
  path = out / f"{name}_{tag}.json"
  assert path.exists(), f"no {path.name}: worker {tag} failed:\n{failed.get(tag)}"
  return json.loads(path.read_text())


def _result(runs, tag: str) -> dict:
  return _json(runs, "result", tag)


def _state(runs, tag: str) -> dict[str, np.ndarray]:
  _result(runs, tag)  # written after the npz: names the failure if it is missing
  with np.load(runs[0] / f"state_{tag}.npz") as z:
    return {k: z[k] for k in z.files}


def _max_diff(a: dict, b: dict, prefix: str) -> float:
  keys = sorted(k for k in a if k.startswith(prefix + "/"))
  assert keys and keys == sorted(k for k in b if k.startswith(prefix + "/"))
  return max(float(np.max(np.abs(a[k] - b[k]))) for k in keys)


def test_two_processes_share_the_batch(runs):
  """Each process holds one device and its own global row; the array is global."""
  for pid in range(2):
    r = _result(runs, f"p{pid}")
    assert r["processes"] == 2 and r["devices"] == [2, 1]
    assert r["global_image_shape"] == [2, 16, 16, 16, 1]
    assert r["shard_rows"] == [[pid, pid + 1]]
  single = _result(runs, worker.TAG_SINGLE)
  assert single["processes"] == 1 and single["devices"] == [1, 1]


def test_two_processes_equal_one(runs):
  """Loss of both steps, params and BatchNorm statistics after 2 steps: within 1e-5 of
  one process on one device; the replicated state is the same in both processes."""
  ref, ref_state = _result(runs, worker.TAG_SINGLE), _state(runs, worker.TAG_SINGLE)
  start = {k.replace("init/", "params/", 1): v for k, v in ref_state.items() if "init/" in k}
  assert _max_diff(ref_state, start, "params") > 1e-4  # the steps did move the params
  p0 = _state(runs, "p0")
  for pid in range(2):
    r, s = _result(runs, f"p{pid}"), _state(runs, f"p{pid}")
    for a, b in zip(r["losses"], ref["losses"], strict=True):
      assert abs(a - b) <= 1e-5 * max(1.0, abs(b)), (r["losses"], ref["losses"])
    assert _max_diff(s, ref_state, "params") <= 1e-5
    assert _max_diff(s, ref_state, "batch_stats") <= 1e-5
    assert _max_diff(s, p0, "params") == 0 and _max_diff(s, p0, "batch_stats") == 0
    # fine_tune over the same 2 batches: its one epoch record is the mean of the 2 losses
    assert abs(r["fine_tune_loss"] - sum(r["losses"]) / 2) <= 1e-6


def _one_writer(runs, what: str) -> None:
  """Each process stat()s the folder as its save returns. One writer: both see the one
  folder process 0 moved into place. Two writers (each swapping in its own temp folder,
  which exist side by side) would leave the processes seeing two inodes."""
  inodes = [_json(runs, f"saved_{what}", f"p{p}")["inode"] for p in range(2)]
  assert inodes[0] == inodes[1], f"{what}: each process swapped in its own folder"


def _target():
  """A train state of the workers' structure, for `restore_state`."""
  from assft_jax.engine import create_state
  from tests._engine_helpers import fast_variables

  module, tx = worker.model_and_optimizer()
  return create_state(fast_variables(module, worker.SIZE), tx)


def test_engine_checkpoint_written_once_restores_in_one_process(runs):
  """`engine.save_state` from both processes: written once; this single process restores
  it bit for bit equal to the state both processes held, at step 2."""
  from assft_jax.engine import restore_state

  _one_writer(runs, "state")
  got = restore_state(runs[0] / "state", _target())
  assert int(got["step"]) == 2
  saved = worker.flat(got["params"], "params") | worker.flat(got["batch_stats"], "batch_stats")
  p0 = _state(runs, "p0")
  assert _max_diff(saved, p0, "params") == 0 and _max_diff(saved, p0, "batch_stats") == 0


def test_round_model_written_once_restores_in_one_process(runs):
  """`workdir.save_model` (the round's network) from both processes: written once; this
  single process loads it bit for bit equal to the variables both processes held."""
  from assft_jax import workdir

  _one_writer(runs, "model")
  got = workdir.load_model(runs[0], 1)
  saved = worker.flat(got["params"], "params") | worker.flat(got["batch_stats"], "batch_stats")
  p0 = _state(runs, "p0")
  assert _max_diff(saved, p0, "params") == 0 and _max_diff(saved, p0, "batch_stats") == 0
