"""Benchmark section `ops` (not part of `all`): the model's layers one by one vs torch.

Command: `python -m experiments.bench ops [--quick]`. Says which operation holds the
train step back. Shapes are those of SegResNetDS(init_filters 32) on a batch of
2 x 64^3 (quick: 2 x 32^3): level 0 = [2, S^3, 32], level 1 = [2, (S/2)^3, 64].
Per op, JAX "s2d" (the CPU default) vs torch on the same CPU, by the shared timer
(timing.py: round-robin, `REPEATS` rounds, quick 3; 2 passes over all ops, with the
min/median/max, ratio of the medians, ratio_p1/ratio_p2 and their spread):
- fwd: the op alone (jitted); fwdbwd: value + input and weight gradients of
  sum(y * g), i.e. what the train step pays for the op.
Ops: Conv3 (3x3x3, stride 1), DownConv (stride 2), UpConv (ConvTranspose k3 s2),
BatchNorm (train mode) + ReLU. gflops = analytic conv FLOPs / time (x3 for fwdbwd).
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks import timing
from experiments.benchmarks.timing import Sample

SIZE, QUICK_SIZE = 64, 32  # S of the [2, S^3, C] level-0 input


def _specs(size: int) -> list[tuple]:
  """(name, module factory, torch factory, input shape NDHWC, out channels, flops)."""
  import torch

  from assft_jax.models.layers import BatchNorm, Conv3, DownConv, UpConv

  h = size // 2
  v0, v1 = 2 * size**3, 2 * h**3
  return [
    (
      "conv3 32->32 L0",
      lambda: Conv3(32, "s2d"),
      lambda: torch.nn.Conv3d(32, 32, 3, padding=1, bias=False),
      (2, size, size, size, 32),
      2 * 27 * 32 * 32 * v0,
    ),
    (
      "conv3 64->64 L1",
      lambda: Conv3(64, "s2d"),
      lambda: torch.nn.Conv3d(64, 64, 3, padding=1, bias=False),
      (2, h, h, h, 64),
      2 * 27 * 64 * 64 * v1,
    ),
    (
      "down 32->64 L0->L1",
      lambda: DownConv(64, "s2d"),
      lambda: torch.nn.Conv3d(32, 64, 3, stride=2, padding=1, bias=False),
      (2, size, size, size, 32),
      2 * 27 * 32 * 64 * v1,
    ),
    (
      "up 64->32 L1->L0",
      lambda: UpConv(32, "s2d"),
      lambda: torch.nn.ConvTranspose3d(
        64, 32, 3, stride=2, padding=1, output_padding=1, bias=False
      ),
      (2, h, h, h, 64),
      2 * 27 * 64 * 32 * v1,
    ),
    (
      "batchnorm+relu 32 L0 (train)",
      BatchNorm,
      lambda: torch.nn.Sequential(torch.nn.BatchNorm3d(32), torch.nn.ReLU()),
      (2, size, size, size, 32),
      0,
    ),
  ]


def _jax_op(make, shape):
  module = make()
  rng = np.random.default_rng(0)
  x = jax.device_put(rng.standard_normal(shape).astype(np.float32))
  variables = jax.device_put(module.init(jax.random.key(0), x[:, :2, :2, :2]))
  bn = "batch_stats" in variables

  def f(params, x):
    v = dict(variables, params=params)
    if bn:
      y, _ = module.apply(v, x, train=True, mutable=["batch_stats"])
      return jax.nn.relu(y)
    return module.apply(v, x)

  y0 = jax.eval_shape(f, variables["params"], x)
  g = jax.device_put(rng.standard_normal(y0.shape).astype(np.float32))
  fwd = jax.jit(f)
  # g is an argument, not a closure constant (XLA would constant-fold it at compile)
  grad = jax.jit(jax.grad(lambda p, x, g: jnp.vdot(f(p, x), g), argnums=(0, 1)))
  p = variables["params"]
  return lambda: fwd(p, x), lambda: grad(p, x, g)


def _torch_op(make, shape):
  import torch

  net = make()
  net.train()
  x = torch.from_numpy(
    np.moveaxis(np.random.default_rng(0).standard_normal(shape).astype(np.float32), -1, 1).copy()
  ).requires_grad_()
  with torch.no_grad():
    g = torch.randn_like(net(x))

  def fwd():
    with torch.no_grad():
      return net(x)

  def fwdbwd():
    x.grad = None
    net.zero_grad(set_to_none=True)
    net(x).backward(g)
    return x.grad

  return fwd, fwdbwd


def run(quick: bool) -> list[dict]:
  size, repeats = (QUICK_SIZE if quick else SIZE), timing.repeats(quick)

  def one_pass() -> list[Sample]:
    samples = []
    for name, make_j, make_t, shape, flops in _specs(size):
      jf, jg = _jax_op(make_j, shape)
      tf, tg = _torch_op(make_t, shape)
      for kind, fns, fl in (
        ("fwd", {"jax": jf, "torch": tf}, flops),
        ("fwdbwd", {"jax": jg, "torch": tg}, 3 * flops),
      ):
        times, _ = timing.interleaved(fns, repeats)
        extra = dict(op=kind, shape="x".join(map(str, shape)), conv_impl="s2d")
        samples.append(Sample(f"{kind} {name}", times["jax"], "torch", times["torch"], fl, extra))
    return samples

  return timing.over_passes(one_pass)


if __name__ == "__main__":
  from experiments.bench import print_table

  print_table(run("--quick" in sys.argv))
