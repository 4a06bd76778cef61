"""Benchmark section `model`: SegResNetDS forward and train step per conv_impl vs MONAI.

Command: `python -m experiments.bench model [--quick]`. SegResNetDS(blocks_down
(1,2,2,4), 4 classes), float32, batch 2 x 1 x S^3, for init_filters 8 and 32 and
S = 64 and 96 (quick: S = 32), side by side on the same CPU:
- forward: eval mode, jitted `apply` vs torch `no_grad` eval forward (NCDHW);
- train_step: the engine's `make_train_step` (train-mode BN, Dice+CE, AdamW, donated
  state) vs torch forward + MONAI DiceCELoss + backward + AdamW.step;
for conv_impl "s2d" and "native". Native runs first at the smallest config; larger configs
run native only if its measured FLOP rate predicts a train step <= NATIVE_BUDGET_S
(XLA:CPU's strided/transposed 3D convs are ~10x slower); skipped cells are rows with a
note and no time. Contenders are timed round-robin (one call each per repeat, median)
so they share the machine's load. The JAX calls run under `jax.transfer_guard("disallow")`
(inputs placed on the device beforehand): a host round trip inside the step would raise.
`compiles` = the jitted function's cache size after all calls (1 = no recompile).
gflops / ref_gflops = analytic conv FLOPs (flops.py) / median time.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time

import jax
import numpy as np

from experiments.benchmarks.flops import segresnet_forward_flops
from experiments.benchmarks.timing import block, row

ARCH = dict(in_channels=1, out_channels=4, blocks_down=(1, 2, 2, 4))
BATCH = 2
NATIVE_BUDGET_S = 20.0
IMPLS = ("s2d", "native")


def _data(size: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(0)
  x = rng.standard_normal((BATCH, size, size, size, 1)).astype(np.float32)
  y = rng.integers(0, ARCH["out_channels"], (BATCH, size, size, size)).astype(np.int32)
  return x, y


def _guarded(fn):
  def call():
    with jax.transfer_guard("disallow"):
      return fn()

  return call


def _jax_fns(impl: str, filters: int, x: np.ndarray, y: np.ndarray):
  """(forward(), train_step(), compile_counts()) closures with inputs on the device."""
  from assft_jax.engine import create_state, make_mesh, make_optimizer, make_train_step
  from assft_jax.engine.train import shard_batch
  from assft_jax.models import SegResNetDS, init_variables

  module = SegResNetDS(**ARCH, init_filters=filters, conv_impl=impl)
  variables = jax.device_put(init_variables(module, jax.random.key(0)))
  forward = jax.jit(lambda v, a: module.apply(v, a))
  tx = make_optimizer(1e-4)
  mesh = make_mesh()
  step = make_train_step(module, tx, mesh, ARCH["out_channels"])
  batch = shard_batch({"image": x, "label": y}, mesh)
  xd, rng = jax.device_put(x), jax.device_put(jax.random.key(0))
  holder = {"s": create_state(variables, tx)}

  def train():
    holder["s"], metrics = step(holder["s"], batch, rng)
    return metrics

  def compiles():
    return {"forward": forward._cache_size(), "train_step": step.jitted._cache_size()}

  return _guarded(lambda: forward(variables, xd)), _guarded(train), compiles


def _torch_fns(filters: int, x: np.ndarray, y: np.ndarray):
  import torch
  from monai.losses import DiceCELoss
  from monai.networks.nets import SegResNetDS as TorchNet

  torch.manual_seed(0)
  net = TorchNet(spatial_dims=3, **ARCH, init_filters=filters)
  opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=1e-5)
  loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
  xt = torch.from_numpy(np.moveaxis(x, -1, 1).copy())  # NCDHW, MONAI's layout
  yt = torch.from_numpy(y).long()[:, None]

  def forward():
    net.eval()
    with torch.no_grad():
      return net(xt)

  def train():
    net.train()
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(net(xt), yt)
    loss.backward()
    opt.step()
    return loss.detach()

  return forward, train


def _interleaved(fns: dict, repeats: int) -> tuple[dict, dict]:
  """(median seconds, first-call seconds incl. compile) of each fn, round-robin."""
  first = {}
  for k, fn in fns.items():
    t0 = time.perf_counter()
    block(fn())
    first[k] = time.perf_counter() - t0
  times = {k: [] for k in fns}
  for _ in range(repeats):
    for k, fn in fns.items():
      t0 = time.perf_counter()
      block(fn())
      times[k].append(time.perf_counter() - t0)
  return {k: statistics.median(v) for k, v in times.items()}, first


def _config_rows(
  filters: int, size: int, repeats: int, native_rate: dict | None, have_torch: bool
) -> tuple[list[dict], dict]:
  """Rows of one (init_filters, size); returns the native FLOP rates it measured."""
  x, y = _data(size)
  fl = segresnet_forward_flops(filters, batch=BATCH, size=size, **ARCH)
  flops = {"forward": fl, "train_step": 3 * fl}
  impls, skipped = [], {}
  for impl in IMPLS:
    if impl == "native" and native_rate is not None:
      est = flops["train_step"] / native_rate["train_step"]
      if est > NATIVE_BUDGET_S:
        skipped[impl] = est
        continue
    impls.append(impl)
  fns = {"forward": {}, "train_step": {}}
  compiles = {}
  for impl in impls:
    fwd, train, compiles[impl] = _jax_fns(impl, filters, x, y)
    fns["forward"][impl], fns["train_step"][impl] = fwd, train
  if have_torch:
    fns["forward"]["torch"], fns["train_step"]["torch"] = _torch_fns(filters, x, y)
  rows, rates = [], {}
  shape = f"{BATCH}x1x{size}^3"
  for op in ("forward", "train_step"):
    med, first = _interleaved(fns[op], repeats)
    ref_s = med.get("torch")
    for impl in impls:
      extra = dict(
        op=op,
        shape=shape,
        init_filters=filters,
        conv_impl=impl,
        gflops=flops[op] / med[impl] / 1e9,
        first_call_s=first[impl],
        compiles=compiles[impl]()[op],
      )
      if ref_s is not None:
        extra["ref_gflops"] = flops[op] / ref_s / 1e9
      rows.append(
        row(
          f"{op} if{filters} {size}^3 {impl}",
          med[impl],
          "monai" if ref_s is not None else None,
          ref_s,
          **extra,
        )
      )
      if impl == "native":
        rates[op] = flops[op] / med[impl]
    for impl, est in skipped.items():
      rows.append(
        row(
          f"{op} if{filters} {size}^3 {impl}",
          float("nan"),
          op=op,
          shape=shape,
          init_filters=filters,
          conv_impl=impl,
          note=f"skipped: est. train step {est:.0f} s > {NATIVE_BUDGET_S:.0f} s "
          "budget at the native rate measured at the smallest config",
        )
      )
  del fns
  gc.collect()
  return rows, rates


def run(quick: bool) -> list[dict]:
  try:
    import monai  # noqa: F401
    import torch  # noqa: F401

    have_torch = True
  except ImportError:
    have_torch = False
  configs = [(8, 32), (32, 32)] if quick else [(8, 64), (8, 96), (32, 64), (32, 96)]
  repeats = 2 if quick else 3
  rows, native_rate = [], None
  for filters, size in configs:
    r, rates = _config_rows(filters, size, repeats, native_rate, have_torch)
    rows += r
    native_rate = native_rate or rates or None
  return rows


if __name__ == "__main__":
  from experiments.bench import print_table

  print_table(run("--quick" in sys.argv))
