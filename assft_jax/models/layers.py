"""Layers of the SegResNet family that need exact PyTorch semantics.

Every conv kernel is stored channels-last as `(kd, kh, kw, in, out)` whatever the
implementation used to apply it, so one set of weights serves both `conv_impl` values
(and the weight port has a single layout per key):

- `Conv3`: the stride-1 3x3x3 convs. `"s2d"` folds the depth taps into channels and
  runs a 2D conv (XLA:CPU's 3D convs are far slower than its 2D ones).
- `DownConv`: MONAI's stride-2 3x3x3 conv (pad 1, no bias). `"s2d"` applies it as
  space-to-depth followed by a 2x2x2 conv, which avoids XLA:CPU's slow input gradient of
  strided convs. Exact: same products, same sums, only the order of the sum differs.
- `UpConv`: MONAI's ConvTranspose3d(k=3, s=2, p=1, output_padding=1, no bias). The stored
  kernel is the torch weight `(in, out, k, k, k)` moved to `(k, k, k, in, out)`, not
  flipped. `"native"` runs the lhs-dilated correlation with the flipped kernel; `"s2d"`
  runs a 2x2x2 conv producing the 8 output phases, then depth-to-space.
- `BatchNorm`: PyTorch BatchNorm3d (eps 1e-5, momentum 0.1, running_var updated with the
  *unbiased* batch variance, which `flax.linen.BatchNorm` does not do).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

Dtype = Any
_DN = ("NDHWC", "DHWIO", "NDHWC")
# He/Kaiming normal (fan_in): the paper's initialisation for a fresh decoder (§3.5).
he_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")

# Tap tables for the exact rewrites, per spatial axis: _TAPS[t][r] is the index k of the
# 3-tap kernel that tap t of the 2-tap conv uses for phase r; 3 means "zero".
# Stride-2 conv: y[m] = x[2m-1] w0 + x[2m] w1 + x[2m+1] w2, with xs[m, r] = x[2m + r]
#   -> tap t=0 reads block m-1 (phase 1: w0), tap t=1 reads block m (w1, w2).
_DOWN_TAPS = np.array([[3, 0], [1, 2]])
# Transposed conv (p=1, op=1): y[2m] = x[m] w1 ; y[2m+1] = x[m] w2 + x[m+1] w0
#   -> tap t=0 reads x[m] (phase 0: w1, phase 1: w2), tap t=1 reads x[m+1] (-, w0).
_UP_TAPS = np.array([[1, 2], [3, 0]])


def _phase_kernel(kernel: jax.Array, taps: np.ndarray) -> jax.Array:
  """[3,3,3,I,O] -> [2,2,2 (tap), 2,2,2 (phase), I, O] via the tap table."""
  k = jnp.pad(kernel, ((0, 1),) * 3 + ((0, 0),) * 2)  # index 3 is the zero tap
  td, rd, th, rh, tw, rw = np.ix_(*(np.arange(2),) * 6)
  # broadcasted gather: result axes (td, rd, th, rh, tw, rw, I, O)
  g = k[taps[td, rd], taps[th, rh], taps[tw, rw]]
  return g.transpose(0, 2, 4, 1, 3, 5, 6, 7)


def space_to_depth(x: jax.Array) -> jax.Array:
  """[B, D, H, W, C] -> [B, D/2, H/2, W/2, 8C], channel order (rd, rh, rw, c)."""
  b, d, h, w, c = x.shape
  x = x.reshape(b, d // 2, 2, h // 2, 2, w // 2, 2, c)
  return x.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, d // 2, h // 2, w // 2, 8 * c)


def depth_to_space(x: jax.Array) -> jax.Array:
  """[B, D, H, W, 8C] (channel order rd, rh, rw, c) -> [B, 2D, 2H, 2W, C]."""
  b, d, h, w, c8 = x.shape
  c = c8 // 8
  x = x.reshape(b, d, h, w, 2, 2, 2, c)
  return x.transpose(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, 2 * d, 2 * h, 2 * w, c)


def resolve_conv_impl(conv_impl: str) -> str:
  """ "auto" -> "s2d" on CPU (XLA:CPU's strided/transposed conv paths are slow), else native."""
  if conv_impl == "auto":
    return "s2d" if jax.default_backend() == "cpu" else "native"
  if conv_impl not in ("native", "s2d"):
    raise ValueError(f"conv_impl must be 'auto', 'native' or 's2d', got {conv_impl!r}")
  return conv_impl


def conv3d(x: jax.Array, kernel: jax.Array, padding, impl: str) -> jax.Array:
  """Stride-1 3D conv: x [B, D, H, W, I], kernel [kd, kh, kw, I, O] -> [B, D', H', W', O].

  "s2d" (the CPU path) folds the depth taps into channels and runs one 2D conv over
  [B*D', H, W, kd*I]: XLA:CPU's 2D convs are ~6x faster than its 3D ones (forward and
  gradients; measured in notes/models.md). Same products, sums in another order; costs
  kd x the input's memory for the stacked copy.
  """
  if impl == "native":
    return jax.lax.conv_general_dilated(x, kernel, (1, 1, 1), tuple(padding), dimension_numbers=_DN)
  (p0, p1), hw_pad = padding[0], tuple(padding[1:])
  kd, kh, kw, cin, cout = kernel.shape
  b, d, h, w, _ = x.shape
  xp = jnp.pad(x, ((0, 0), (p0, p1), (0, 0), (0, 0), (0, 0))) if (p0 or p1) else x
  dout = d + p0 + p1 - kd + 1
  xs = jnp.concatenate([xp[:, t : t + dout] for t in range(kd)], axis=-1) if kd > 1 else xp
  k2 = kernel.transpose(1, 2, 0, 3, 4).reshape(kh, kw, kd * cin, cout)  # channels (t, c)
  y = jax.lax.conv_general_dilated(
    xs.reshape(b * dout, h, w, kd * cin),
    k2,
    (1, 1),
    hw_pad,
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
  )
  return y.reshape(b, dout, *y.shape[1:])


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
    return conv3d(x, kernel, ((1, 1),) * 3, resolve_conv_impl(self.conv_impl))


class DownConv(nn.Module):
  """Stride-2 3x3x3 conv, pad 1, no bias: [B, D, H, W, I] -> [B, D/2, H/2, W/2, O]."""

  features: int
  conv_impl: str = "auto"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cin = x.shape[-1]
    x, kernel = _kernel3(self, x)
    if resolve_conv_impl(self.conv_impl) == "native":
      return jax.lax.conv_general_dilated(
        x, kernel, (2, 2, 2), ((1, 1),) * 3, dimension_numbers=_DN
      )
    k2 = _phase_kernel(kernel, _DOWN_TAPS).reshape(2, 2, 2, 8 * cin, self.features)
    return conv3d(space_to_depth(x), k2, ((1, 0),) * 3, "s2d")


class UpConv(nn.Module):
  """ConvTranspose3d(k=3, s=2, p=1, output_padding=1, no bias): [B,D,H,W,I] -> [B,2D,2H,2W,O]."""

  features: int
  conv_impl: str = "auto"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cin = x.shape[-1]
    x, kernel = _kernel3(self, x)
    if resolve_conv_impl(self.conv_impl) == "native":
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
    k2 = _phase_kernel(kernel, _UP_TAPS)  # (t, r, I, O) -> (t, I, r, O)
    k2 = k2.transpose(0, 1, 2, 6, 3, 4, 5, 7).reshape(2, 2, 2, cin, 8 * self.features)
    return depth_to_space(conv3d(x, k2, ((0, 1),) * 3, "s2d"))


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
