"""Benchmark section `model`: SegResNetDS forward and train step, both conv impls vs MONAI.

Command: `python -m experiments.bench model` or `python -m experiments.benchmarks.model
[--quick]`. SegResNetDS(init_filters 8, blocks_down (1,2,2,4), out 4), batch 2 x 1 x 64^3
(quick: 2 x 1 x 32^3), float32, on the same CPU side by side:
- forward: eval mode, jitted `apply` vs torch `no_grad` eval forward;
- train_step: train mode (batch stats updated), softmax cross-entropy + AdamW(1e-4), jitted
  value_and_grad + optax update vs torch forward/backward/step;
for conv_impl "native" and "s2d"; ratio = jax / torch (lower is better). The three
contenders are timed round-robin (one call each per repeat) so they share the same load.
"""
from __future__ import annotations

import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.benchmarks.timing import median_time, row

ARCH = dict(init_filters=8, in_channels=1, out_channels=4, blocks_down=(1, 2, 2, 4))


def _data(size: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, size, size, size, 1)).astype(np.float32)
  y = rng.integers(0, ARCH["out_channels"], (2, size, size, size)).astype(np.int32)
  return x, y


def _jax_fns(impl: str):
  from assft_jax.models import SegResNetDS, init_variables
  module = SegResNetDS(**ARCH, conv_impl=impl)
  variables = init_variables(module, jax.random.key(0))
  tx = optax.adamw(1e-4)
  forward = jax.jit(lambda v, x: module.apply(v, x))

  @jax.jit
  def train_step(state, x, y):
    def loss_fn(params):
      logits, upd = module.apply({"params": params, "batch_stats": state["batch_stats"]}, x,
                                 train=True, mutable=["batch_stats"])
      # one-hot CE: its gradient is dense (the integer-label form scatters on CPU)
      onehot = jax.nn.one_hot(y, ARCH["out_channels"], dtype=logits.dtype)
      ce = optax.softmax_cross_entropy(logits, onehot).mean()
      return ce, upd["batch_stats"]
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt = tx.update(grads, state["opt"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "batch_stats": stats,
            "opt": opt}, loss

  state = {"params": variables["params"], "batch_stats": variables["batch_stats"],
           "opt": tx.init(variables["params"])}
  return variables, forward, train_step, state


def _torch_fns():
  import torch
  from monai.networks.nets import SegResNetDS as TorchNet
  torch.manual_seed(0)
  net = TorchNet(spatial_dims=3, **ARCH)
  opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
  loss_fn = torch.nn.CrossEntropyLoss()

  def forward(x):
    net.eval()
    with torch.no_grad():
      return net(x)

  def train_step(x, y):
    net.train()
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(net(x), y)
    loss.backward()
    opt.step()
    return loss.detach()

  return forward, train_step


def _interleaved(fns: dict, repeats: int) -> dict:
  """Median seconds of each fn, timed round-robin so that all see the same machine load
  (the CPU is shared; back-to-back blocks gave torch times varying 2x between runs)."""
  for fn in fns.values():
    median_time(fn, warmup=1, repeats=1)
  times = {k: [] for k in fns}
  for _ in range(repeats):
    for k, fn in fns.items():
      times[k].append(median_time(fn, warmup=0, repeats=1))
  return {k: statistics.median(v) for k, v in times.items()}


def run(quick: bool) -> list[dict]:
  import torch
  size, repeats = (32, 3) if quick else (64, 5)
  x, y = _data(size)
  tx_, ty_ = torch.from_numpy(np.moveaxis(x, -1, 1).copy()), torch.from_numpy(y).long()
  xj, yj = jnp.asarray(x), jnp.asarray(y)
  t_fwd, t_step = _torch_fns()
  fwd_fns = {"torch": lambda: t_fwd(tx_)}
  step_fns = {"torch": lambda: t_step(tx_, ty_)}
  for impl in ("native", "s2d"):
    variables, fwd, step, state = _jax_fns(impl)
    holder = {"s": state}

    def do_step(step=step, holder=holder):
      holder["s"], loss = step(holder["s"], xj, yj)
      return loss

    fwd_fns[impl] = lambda fwd=fwd, variables=variables: fwd(variables, xj)
    step_fns[impl] = do_step
  shape = f"2x1x{size}^3"
  rows = []
  for kind, fns in (("forward", fwd_fns), ("train_step", step_fns)):
    t = _interleaved(fns, repeats)
    rows += [row(f"{kind}/{impl}", t[impl], "monai", t["torch"], shape=shape)
             for impl in ("native", "s2d")]
  return rows


if __name__ == "__main__":
  from experiments.bench import print_table
  print_table(run("--quick" in sys.argv))
