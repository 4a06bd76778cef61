"""Layers of the SegResNet family that need exact PyTorch semantics.

Every conv kernel is stored channels-last as `(kd, kh, kw, in, out)` whatever the
implementation that applies it, so one set of weights serves every `conv_impl` value
(and the weight port has a single layout per key). `"onednn"` (the CPU default where its
extension is built, `onednn.py`) runs all three convs below as oneDNN primitives; the
XLA paths are:

- `Conv3`: the stride-1 3x3x3 convs. `"s2d"` folds the depth taps into channels and
  runs a 2D conv (XLA:CPU's 3D convs are far slower than its 2D ones).
- `DownConv`: MONAI's stride-2 3x3x3 conv (pad 1, no bias). `"s2d"` splits the input
  into blocks of two and runs one GEMM per block offset over the phases it reads
  (`down_conv_phases`), which avoids XLA:CPU's slow strided convs and their gradients.
- `UpConv`: MONAI's ConvTranspose3d(k=3, s=2, p=1, output_padding=1, no bias). The stored
  kernel is the torch weight `(in, out, k, k, k)` moved to `(k, k, k, in, out)`, not
  flipped. `"native"` runs the lhs-dilated correlation with the flipped kernel; `"s2d"`
  runs one GEMM per output phase, then interleaves the phases (`up_conv_phases`).
  Both rewrites are exact: the same products, only the order of the sums differs.
- `BatchNorm`: PyTorch BatchNorm3d (eps 1e-5, momentum 0.1, running_var updated with the
  *unbiased* batch variance, which `flax.linen.BatchNorm` does not do).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from assft_jax.models import onednn

Dtype = Any
_DN = ("NDHWC", "DHWIO", "NDHWC")
_DN2 = ("NHWC", "HWIO", "NHWC")
# He/Kaiming normal (fan_in): the paper's initialisation for a fresh decoder (§3.5).
he_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")

# The stride-2 rewrites, per spatial axis (y: output, x: input, w0..w2: the 3 taps).
# Stride-2 conv: y[m] = x[2m-1] w0 + x[2m] w1 + x[2m+1] w2. With x split into blocks of
#   two, xb[m, r] = x[2m + r]: block m-1 gives phase 1 (w0), block m phases 0, 1 (w1, w2).
#   Per block offset (-1, 0): (the phases read, the taps they meet).
_DOWN_READS = (((1,), (0,)), ((0, 1), (1, 2)))
# Transposed conv (p=1, output_padding=1): y[2m] = x[m] w1, y[2m+1] = x[m] w2 + x[m+1] w0.
#   Per output phase (0, 1): (the input offsets read, the taps they meet).
_UP_READS = (((0,), (1,)), ((0, 1), (2, 0)))


def _split_blocks(x: jax.Array) -> jax.Array:
  """[B, D, H, W, C] -> [B, D/2, 2, H/2, 2, W/2, 2, C]: blocks of two and their phase."""
  b, d, h, w, c = x.shape
  return x.reshape(b, d // 2, 2, h // 2, 2, w // 2, 2, c)


def depth_to_space(x: jax.Array) -> jax.Array:
  """[B, D, H, W, 8C] (channel order rd, rh, rw, c) -> [B, 2D, 2H, 2W, C]."""
  b, d, h, w, c8 = x.shape
  c = c8 // 8
  x = x.reshape(b, d, h, w, 2, 2, 2, c)
  return x.transpose(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, 2 * d, 2 * h, 2 * w, c)


def down_conv_phases(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-2 3x3x3 conv, pad 1: x [B, D, H, W, I] (D, H, W even), kernel [3, 3, 3, I, O]
  -> [B, D/2, H/2, W/2, O], as 8 GEMMs, one per block offset (od, oh, ow) in {-1, 0}^3,
  each over the phases that offset reads (_DOWN_READS): 27 taps, no zero ones.

  Why: XLA:CPU's strided 3D conv is slow, and so is its input gradient; a space-to-depth
  + 2x2x2 conv would multiply 64 taps for 27 useful ones, and XLA:CPU's gradient of it is
  slow as well. Same products; only the order of the sums differs.
  """
  _, d, h, w, _ = x.shape
  n = (d // 2, h // 2, w // 2)
  xb = jnp.pad(_split_blocks(x), ((0, 0), (1, 0), (0, 0), (1, 0), (0, 0), (1, 0), (0, 0), (0, 0)))
  y = None
  for od, oh, ow in np.ndindex(2, 2, 2):  # index 0 = block m-1 (after the front pad)
    (pd, kd), (ph, kh), (pw, kw) = _DOWN_READS[od], _DOWN_READS[oh], _DOWN_READS[ow]
    blk = xb[:, od : od + n[0], :, oh : oh + n[1], :, ow : ow + n[2]]
    blk = blk[:, :, list(pd)][:, :, :, :, list(ph)][:, :, :, :, :, :, list(pw)]
    part = jnp.einsum("bdphqwrc,pqrco->bdhwo", blk, kernel[np.ix_(kd, kh, kw)])
    y = part if y is None else y + part
  return y


def up_conv_phases(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """ConvTranspose3d(k=3, s=2, p=1, output_padding=1): x [B, D, H, W, I], kernel
  [3, 3, 3, I, O] (torch's weight moved to channels-last, not flipped) -> [B, 2D, 2H, 2W, O],
  as 8 GEMMs, one per output phase, each over the shifted inputs that phase reads
  (_UP_READS): 27 taps, no zero ones; then the phases are interleaved.

  Why: XLA:CPU's lhs-dilated conv is slow, and so is its gradient of a 2x2x2 phase conv
  (64 taps for 27). Same products; only the order of the sums differs.
  """
  _, d, h, w, c = x.shape
  xp = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 1), (0, 0)))
  phases = []
  for rd, rh, rw in np.ndindex(2, 2, 2):
    (sd, kd), (sh, kh), (sw, kw) = _UP_READS[rd], _UP_READS[rh], _UP_READS[rw]
    shifted = [xp[:, i : i + d, j : j + h, k : k + w] for i in sd for j in sh for k in sw]
    taps = kernel[np.ix_(kd, kh, kw)].reshape(len(shifted), c, kernel.shape[-1])
    phases.append(jnp.einsum("bdhwtc,tco->bdhwo", jnp.stack(shifted, -2), taps))
  return depth_to_space(jnp.concatenate(phases, -1))


CONV_IMPLS = ("auto", "native", "s2d", "onednn")


def _why_not_onednn(dtype: Dtype, n_devices: int | None) -> str | None:
  """Why the oneDNN convs cannot run here, or None when they can. n_devices: the devices
  the computation is partitioned over (None: not checked)."""
  if jax.default_backend() != "cpu":
    return f"runs on the CPU, and this process computes on {jax.default_backend()}"
  if n_devices is not None and n_devices != 1:
    return f"runs on a single CPU device, and this run uses {n_devices}"
  if jnp.dtype(dtype) != jnp.float32:
    return f"runs float32 only, and the compute dtype is {jnp.dtype(dtype).name}"
  if why := onednn.why_unavailable():
    return f"its extension is unavailable: {why}"
  return None


def choose_conv_impl(
  conv_impl: str, dtype: Dtype = jnp.float32, n_devices: int | None = None
) -> tuple[str, str]:
  """(the conv implementation to run, why). "auto" -> "onednn" on a single CPU device when
  the extension is built and the compute dtype is float32 (oneDNN's convs are the fastest
  on a CPU), else "s2d" on CPU (XLA:CPU's strided and transposed conv paths are slow),
  else "native" (accelerators). n_devices: the devices the run partitions its batch over
  (default: every device of this process).

  With several devices "auto" keeps "s2d": XLA's SPMD partitioner cannot split a custom
  call over the batch, so each device would run the whole batch's conv. An explicit
  "onednn" that cannot run is a ValueError saying why."""
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f"conv_impl must be one of {', '.join(CONV_IMPLS)}; got {conv_impl!r}")
  n = jax.device_count() if n_devices is None else n_devices
  if conv_impl == "auto":
    if jax.default_backend() != "cpu":
      return "native", f"auto: XLA's own convs on {jax.default_backend()}"
    why = _why_not_onednn(dtype, n)
    if why:
      return "s2d", f"auto: the XLA CPU rewrites, since oneDNN {why}"
    return "onednn", "auto: oneDNN's convs on one CPU device"
  if conv_impl == "onednn" and (why := _why_not_onednn(dtype, n)):
    raise ValueError(f"conv_impl 'onednn': {why}")
  return conv_impl, "as asked"


def resolve_conv_impl(conv_impl: str, dtype: Dtype = jnp.float32) -> str:
  """The conv implementation a layer runs. "auto" is `choose_conv_impl`'s choice for this
  process; an explicit value is kept (a run resolves "auto" once, when its config is
  built, for the devices it uses, and hands its layers the result), and "onednn" is
  refused only where it cannot run at all (not on a CPU, not float32, not built)."""
  if conv_impl == "auto":
    return choose_conv_impl(conv_impl, dtype)[0]
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f"conv_impl must be one of {', '.join(CONV_IMPLS)}; got {conv_impl!r}")
  if conv_impl == "onednn" and (why := _why_not_onednn(dtype, None)):
    raise ValueError(f"conv_impl 'onednn': {why}")
  return conv_impl


def _stack_depth_taps(x: jax.Array, hw_pad: int) -> jax.Array:
  """[B, D, H, W, C] -> [B, D, H + 2 hw_pad, W + 2 hw_pad, 3C]: the 3 depth taps of a
  pad-1 conv side by side in channels (order (kd, c)), H and W zero-padded by hw_pad."""
  d = x.shape[1]
  xp = jnp.pad(x, ((0, 0), (1, 1), (hw_pad, hw_pad), (hw_pad, hw_pad), (0, 0)))
  return jnp.concatenate([xp[:, t : t + d] for t in range(3)], axis=-1)


def _depth_folded(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """3x3x3 conv, stride 1, pad 1, with the depth taps folded into channels: one 2D conv
  over [B*D, H, W, 3*I]. XLA:CPU's 2D convs are much faster than its 3D ones. Costs 3x
  the input's memory for the stacked copy."""
  b, d, h, w, cin = x.shape
  xs = _stack_depth_taps(x, 0)
  k2 = kernel.transpose(1, 2, 0, 3, 4).reshape(3, 3, 3 * cin, kernel.shape[-1])
  y = jax.lax.conv_general_dilated(
    xs.reshape(b * d, h, w, 3 * cin), k2, (1, 1), ((1, 1), (1, 1)), dimension_numbers=_DN2
  )
  return y.reshape(b, d, h, w, -1)


@jax.custom_vjp
def _conv3_s2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return _depth_folded(x, kernel)


def _conv3_s2d_fwd(x, kernel):
  return _depth_folded(x, kernel), (x, kernel)


def _conv3_s2d_bwd(res, g):
  """The input gradient is the same conv of g with the flipped, in/out-swapped kernel.
  The kernel gradient is 9 GEMMs, one per (kh, kw) tap, of the depth-folded input
  [B, D, H+2, W+2, 3I] shifted by that tap against g, contracted over every voxel: at
  64 channels these GEMMs are several times faster than XLA:CPU's own weight gradient of
  the folded 2D conv (PERFORMANCE.md). The 9 run in a `lax.map`, so one shifted copy is
  live at a time: unrolled as 27 GEMMs, XLA keeps every shifted copy of x live, and the
  train step at CT-FM's width (if32, 96^3) runs out of memory."""
  x, kernel = res
  dx = _depth_folded(g, kernel[::-1, ::-1, ::-1].swapaxes(3, 4))
  b, d, h, w, cin = x.shape
  xs = _stack_depth_taps(x, 1)
  hw_taps = jnp.asarray(np.array(list(np.ndindex(3, 3)), np.int32))

  def tap(hw: jax.Array) -> jax.Array:  # -> [3I, O]
    shifted = jax.lax.dynamic_slice(xs, (0, 0, hw[0], hw[1], 0), (b, d, h, w, 3 * cin))
    return jnp.einsum("bdhwi,bdhwo->io", shifted, g)

  dk = jax.lax.map(tap, hw_taps).reshape(3, 3, 3, cin, -1)  # (kh, kw, kd, I, O)
  return dx, dk.transpose(2, 0, 1, 3, 4).astype(kernel.dtype)


_conv3_s2d.defvjp(_conv3_s2d_fwd, _conv3_s2d_bwd)


# The per-tap kernel gradient pays for itself from 32 channels on (XLA:CPU's own weight
# gradient of the folded conv degrades there). Below it the thin per-tap GEMMs are
# memory-bound and XLA's gradient wins: at 8 channels (the benchmark's level 0) the per-tap
# form is slower, enough to halve a benchmark cell's train step rate (PERFORMANCE.md).
TAP_GRAD_MIN_CHANNELS = 32


def conv3d(x: jax.Array, kernel: jax.Array, impl: str) -> jax.Array:
  """3x3x3 conv, stride 1, pad 1: x [B, D, H, W, I], kernel [3, 3, 3, I, O] -> [B, D, H, W, O].

  "s2d" (the CPU path) runs the depth-folded 2D conv forward; with at least
  `TAP_GRAD_MIN_CHANNELS` input and output channels its own backward (`_conv3_s2d_bwd`),
  below that XLA's gradient of the same folded conv. Same products as the native conv,
  sums in another order.
  """
  if impl == "native":
    return jax.lax.conv_general_dilated(x, kernel, (1, 1, 1), ((1, 1),) * 3, dimension_numbers=_DN)
  if impl == "onednn":
    return onednn.conv3(x, kernel)
  if min(kernel.shape[3:]) >= TAP_GRAD_MIN_CHANNELS:
    return _conv3_s2d(x, kernel)
  return _depth_folded(x, kernel)


def _kernel3(mod: nn.Module, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Declares mod's param "kernel" [3, 3, 3, I, O] (float32 storage, flax.linen.Conv's
  name and layout); returns x and the kernel in the compute dtype."""
  kernel = mod.param("kernel", he_init, (3, 3, 3, x.shape[-1], mod.features), jnp.float32)
  return x.astype(mod.dtype), kernel.astype(mod.dtype)


class Conv3(nn.Module):
  """3x3x3 conv, stride 1, pad 1, no bias (every non-strided conv of the network).

  Param "kernel" [3, 3, 3, I, O] (the same name and layout as flax.linen.Conv).
  """

  features: int
  conv_impl: str = "auto"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x, kernel = _kernel3(self, x)
    return conv3d(x, kernel, resolve_conv_impl(self.conv_impl, self.dtype))


class DownConv(nn.Module):
  """Stride-2 3x3x3 conv, pad 1, no bias: [B, D, H, W, I] -> [B, D/2, H/2, W/2, O]."""

  features: int
  conv_impl: str = "auto"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x, kernel = _kernel3(self, x)
    impl = resolve_conv_impl(self.conv_impl, self.dtype)
    if impl == "native":
      return jax.lax.conv_general_dilated(
        x, kernel, (2, 2, 2), ((1, 1),) * 3, dimension_numbers=_DN
      )
    if impl == "onednn":
      return onednn.down_conv(x, kernel)
    return down_conv_phases(x, kernel)


class UpConv(nn.Module):
  """ConvTranspose3d(k=3, s=2, p=1, output_padding=1, no bias): [B,D,H,W,I] -> [B,2D,2H,2W,O]."""

  features: int
  conv_impl: str = "auto"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x, kernel = _kernel3(self, x)
    impl = resolve_conv_impl(self.conv_impl, self.dtype)
    if impl == "onednn":
      return onednn.up_conv(x, kernel)
    if impl == "native":
      # transposed conv = correlation of the 2x-dilated input with the flipped kernel,
      # padded (k-1-p, k-1-p+output_padding) = (1, 2).
      return jax.lax.conv_general_dilated(
        x,
        kernel[::-1, ::-1, ::-1],
        (1, 1, 1),
        ((1, 2),) * 3,
        lhs_dilation=(2, 2, 2),
        dimension_numbers=_DN,
      )
    return up_conv_phases(x, kernel)


class BatchNorm(nn.Module):
  """PyTorch BatchNorm3d over [B, D, H, W, C] (channels-last).

  Train: normalises with the biased batch variance and updates
  `running = (1 - momentum) * running + momentum * batch`, using the unbiased variance
  for `var`, exactly like torch. Statistics are computed in float32 whatever `dtype`.
  Under a sharded batch, the means are global (GSPMD), i.e. SyncBatchNorm semantics.
  """

  momentum: float = 0.1
  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
    xf = x.astype(jnp.float32)
    if train:
      axes = tuple(range(x.ndim - 1))
      n = int(np.prod([x.shape[a] for a in axes]))
      mean = jnp.mean(xf, axes)
      var = jnp.mean(jnp.square(xf - mean), axes)  # two-pass: matches torch closely
      if not self.is_initializing():
        m = self.momentum
        ra_mean.value = (1 - m) * ra_mean.value + m * mean
        ra_var.value = (1 - m) * ra_var.value + m * var * (n / max(n - 1, 1))
    else:
      mean, var = ra_mean.value, ra_var.value
    mul = scale * jax.lax.rsqrt(var + self.epsilon)
    return (xf * mul + (bias - mean * mul)).astype(self.dtype)


def make_norm(norm: str, channels: int, dtype: Dtype, name: str) -> nn.Module:
  """ "batch" (torch BatchNorm3d), "instance" (InstanceNorm3d, affine) or "group".

  "group" uses gcd(8, channels) groups (MONAI SegResNet's 8 groups where they divide).
  """
  if norm == "batch":
    return BatchNorm(dtype=dtype, name=name)
  if norm == "instance":
    return nn.GroupNorm(
      num_groups=None, group_size=1, epsilon=1e-5, dtype=dtype, use_fast_variance=False, name=name
    )
  if norm == "group":
    return nn.GroupNorm(
      num_groups=int(np.gcd(8, channels)),
      epsilon=1e-5,
      dtype=dtype,
      use_fast_variance=False,
      name=name,
    )
  raise ValueError(f"norm must be 'batch', 'instance' or 'group', got {norm!r}")
