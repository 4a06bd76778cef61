"""The same train step on 1 and 4 (virtual CPU) devices gives the same numbers.

Runs in a subprocess: XLA_FLAGS must be set before jax initialises, and pytest has
already imported jax for the other test modules.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import json, sys
import jax, numpy as np
from assft_jax.engine import create_state, make_mesh, make_optimizer, make_train_step, shard_batch
from assft_jax.models import SegResNetDS
from tests._engine_helpers import fast_variables, phantom_batch

assert len(jax.devices()) == 4, jax.devices()
m = SegResNetDS(init_filters=4, out_channels=2, blocks_down=(1, 1, 1))
v = fast_variables(m, 16)
tx = make_optimizer(1e-3, 10)
batches = [phantom_batch(np.random.default_rng(i), 4) for i in range(2)]
out = {}
for n in (1, 4):
  mesh = make_mesh(jax.devices()[:n])
  step = make_train_step(m, tx, mesh, 2)
  s = create_state(v, tx)
  losses = []
  for b in batches:  # two steps: the second sees the first's params AND batch_stats
    s, met = step(s, b, jax.random.key(0))
    losses.append(float(met["loss"]))
  shards = len(shard_batch(batches[0], mesh)["image"].addressable_shards)
  out[n] = (losses, jax.tree.map(np.asarray, {"params": s["params"], "bs": s["batch_stats"]}), shards)
(l1, t1, s1), (l4, t4, s4) = out[1], out[4]
diff = lambda a, b: max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
print(json.dumps({"loss1": l1, "loss4": l4, "shards": [s1, s4],
                  "params": diff(t1["params"], t4["params"]), "bs": diff(t1["bs"], t4["bs"]),
                  "moved": diff(t1["params"], jax.tree.map(np.asarray, v["params"]))}))
"""


def test_four_devices_equal_one_device():
  here = Path(__file__).parent
  env = dict(
    os.environ,
    XLA_FLAGS="--xla_force_host_platform_device_count=4",
    JAX_PLATFORMS="cpu",
    PYTHONPATH=os.pathsep.join([str(here.parent), os.environ.get("PYTHONPATH", "")]),
  )
  proc = subprocess.run(
    [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=900
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  r = json.loads(proc.stdout.strip().splitlines()[-1])
  assert r["shards"] == [1, 4]
  assert r["moved"] > 1e-4  # the steps did update the params
  for a, b in zip(r["loss1"], r["loss4"]):
    assert abs(a - b) <= 1e-5 * max(1.0, abs(a)), r
  assert r["params"] <= 1e-5, r
  assert r["bs"] <= 1e-5, r
