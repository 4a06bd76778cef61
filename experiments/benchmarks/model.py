"""Benchmark section `model`: SegResNetDS forward and train step per conv_impl vs MONAI.

Command: `python -m experiments.bench model [--quick]`. SegResNetDS(blocks_down
(1,2,2,4), 4 classes), float32, batch 2 x 1 x S^3, for init_filters 8 and 32 and
S = 64 and 96 (quick: S = 32), side by side on the same CPU:
- forward: eval mode, jitted `apply` vs torch `no_grad` eval forward (NCDHW);
- train_step: the engine's `make_train_step` (train-mode BN, Dice+CE, AdamW, donated
  state) vs torch forward + MONAI DiceCELoss + backward + AdamW.step;
for conv_impl "onednn" (where its extension is built), "s2d" and "native". Native runs first at the smallest config; larger configs
run native only if its measured FLOP rate predicts a train step <= NATIVE_BUDGET_S
(XLA:CPU's strided/transposed 3D convs are far slower); skipped cells are rows with a
note and no time. The contenders of a cell (s2d, native, MONAI) are timed round-robin by
the shared timer (timing.py: warm-up, then `REPEATS` rounds; quick: 2), and every
configuration is measured in 2 passes (all configurations, then all again, each pass
with new models and compiles; the native decision is the first pass's): each row has
min/median/max of both contenders, ratio = the ratio of the medians, ratio_p1/ratio_p2
and their spread. The JAX calls run under `jax.transfer_guard("disallow")` (inputs
placed on the device beforehand): a host round trip inside the step would raise.
`compiles` = the jitted function's traces after all calls (1 = no recompile);
first_call_s (compile included) is pass 1's. gflops / ref_gflops = analytic conv FLOPs
(flops.py) / median time.
"""

from __future__ import annotations

import gc
import sys

import jax
import numpy as np

from assft_jax.models import onednn
from experiments.benchmarks import timing
from experiments.benchmarks.flops import segresnet_forward_flops
from experiments.benchmarks.timing import Sample

ARCH = dict(in_channels=1, out_channels=4, blocks_down=(1, 2, 2, 4))
BATCH = 2
NATIVE_BUDGET_S = 20.0
IMPLS = ("onednn", "s2d", "native")  # onednn only where its extension is built
CONFIGS = [(8, 64), (8, 96), (32, 64), (32, 96)]  # (init_filters, size)
QUICK_CONFIGS = [(8, 32), (32, 32)]
QUICK_REPEATS = 2


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
  from assft_jax.engine import timing as engine_timing
  from assft_jax.engine.train import shard_batch
  from assft_jax.models import SegResNetDS, init_variables

  module = SegResNetDS(**ARCH, init_filters=filters, conv_impl=impl)
  variables = jax.device_put(init_variables(module, jax.random.key(0)))
  forward = engine_timing.jit(lambda v, a: module.apply(v, a))
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
    return {"forward": forward.traces(), "train_step": step.jitted.traces()}

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


def _config_samples(
  filters: int, size: int, repeats: int, native_rate: dict | None, have_torch: bool
) -> tuple[list[Sample], dict]:
  """Samples of one (init_filters, size); returns the native FLOP rates it measured."""
  x, y = _data(size)
  fl = segresnet_forward_flops(filters, batch=BATCH, size=size, **ARCH)
  flops = {"forward": fl, "train_step": 3 * fl}
  impls, skipped = [], {}
  for impl in IMPLS:
    if impl == "onednn" and not onednn.available():
      continue
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
  samples, rates = [], {}
  shape = f"{BATCH}x1x{size}^3"
  for op in ("forward", "train_step"):
    times, first = timing.interleaved(fns[op], repeats)
    for impl in impls:
      samples.append(
        Sample(
          f"{op} if{filters} {size}^3 {impl}",
          times[impl],
          "monai" if have_torch else None,
          times.get("torch", ()),
          flops[op],
          dict(
            op=op,
            shape=shape,
            init_filters=filters,
            conv_impl=impl,
            first_call_s=first[impl],
            compiles=compiles[impl]()[op],
          ),
        )
      )
      if impl == "native":
        rates[op] = flops[op] / np.median(times[impl])
    for impl, est in skipped.items():
      samples.append(
        Sample(
          f"{op} if{filters} {size}^3 {impl}",
          (),
          extra=dict(
            op=op,
            shape=shape,
            init_filters=filters,
            conv_impl=impl,
            note=f"skipped: est. train step {est:.0f} s > {NATIVE_BUDGET_S:.0f} s "
            "budget at the native rate measured at the smallest config",
          ),
        )
      )
  del fns
  gc.collect()
  return samples, rates


def run(quick: bool) -> list[dict]:
  try:
    import monai  # noqa: F401
    import torch  # noqa: F401

    have_torch = True
  except ImportError:
    have_torch = False
  configs = QUICK_CONFIGS if quick else CONFIGS
  repeats = QUICK_REPEATS if quick else timing.REPEATS
  native = {}  # pass 1's native FLOP rates at the first config: both passes skip alike

  def one_pass() -> list[Sample]:
    samples = []
    for i, (filters, size) in enumerate(configs):
      rate = native["rates"] if i else None  # the first config always runs native
      s, rates = _config_samples(filters, size, repeats, rate, have_torch)
      samples += s
      native.setdefault("rates", rates)
    return samples

  return timing.over_passes(one_pass)


if __name__ == "__main__":
  from experiments.bench import print_table

  print_table(run("--quick" in sys.argv))
