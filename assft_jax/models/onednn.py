"""oneDNN's 3x3x3 convs on the CPU, through `jax.ffi` (the layers' `conv_impl="onednn"`).

oneDNN's brgconv kernels (the ones PyTorch uses) run the network's 3x3x3 convs and their
gradients several times faster than XLA:CPU. `onednn_conv.cc` wraps them in one FFI
handler; this module loads it and exposes the three convs of the SegResNet family with their
gradients (`jax.custom_vjp`), each gradient again a oneDNN primitive:

- `conv3(x, k)`: stride 1, pad 1 (`Conv3`);
- `down_conv(x, k)`: stride 2, pad 1 (`DownConv`);
- `up_conv(x, k)`: ConvTranspose3d(k=3, s=2, p=1, output_padding=1) (`UpConv`), which is
  the backward data of the stride-2 conv with the kernel's channel roles swapped.

Kernels keep the layers' `(kd, kh, kw, in, out)` layout. Float32 only.

The extension is built once per environment, at install time, by
`python -m assft_jax.models.onednn_build` (onednn_build.py; the Makefile's venv step).
Where it is not built (no g++, no `cpu` extra, not x86-64 Linux) `available()` is False,
`why_unavailable()` says why, and `conv_impl="auto"` keeps the XLA path.
"""

from __future__ import annotations

import ctypes
from functools import cache, partial

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

TARGET = "assft_onednn_conv3"
_FWD, _BWD_DATA, _BWD_WEIGHTS = 0, 1, 2


@cache
def _load() -> str | None:
  """Loads the built library and registers its handler, once per process; returns why
  it could not (None when it did)."""
  from assft_jax.models import onednn_build  # not at import: see its CLI

  if why := onednn_build.why_unavailable():
    return why
  path = onednn_build.library_path()
  try:
    lib = ctypes.cdll.LoadLibrary(str(path))
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.AssftOnednnConv3), platform="cpu")
  except (OSError, AttributeError) as err:
    logging.warning("oneDNN conv extension %s did not load (%s); using the XLA path", path, err)
    return f"{path} does not load ({err}): python -m assft_jax.models.onednn_build --force"
  return None


def why_unavailable() -> str | None:
  """Why the extension cannot be used in this process (not built, and why not; or it does
  not load), or None when it is loaded."""
  return _load()


def available() -> bool:
  """True when the extension is built for this environment and loads."""
  return _load() is None


def _call(kind: int, stride: int, wt: int, a: jax.Array, b: jax.Array, out_shape) -> jax.Array:
  return jax.ffi.ffi_call(
    TARGET, jax.ShapeDtypeStruct(out_shape, jnp.float32), vmap_method="sequential"
  )(a, b, kind=np.int64(kind), stride=np.int64(stride), wt=np.int64(wt))


def _out_shape(x_shape, stride: int, channels: int) -> tuple[int, ...]:
  b, *spatial, _ = x_shape
  return (b, *[(s - 1) // stride + 1 for s in spatial], channels)


# --- the conv (stride 1 or 2), weights [3, 3, 3, I, O] -----------------------------------
@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x: jax.Array, k: jax.Array, stride: int) -> jax.Array:
  return _call(_FWD, stride, 0, x, k, _out_shape(x.shape, stride, k.shape[-1]))


def _conv_fwd(x, k, stride):
  return _conv(x, k, stride), (x, k)


def _conv_bwd(stride, res, g):
  x, k = res
  dx = _call(_BWD_DATA, stride, 0, g, k, x.shape)
  dk = _call(_BWD_WEIGHTS, stride, 0, x, g, k.shape)
  return dx, dk


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """3x3x3 conv, stride 1, pad 1: [B, D, H, W, I], [3, 3, 3, I, O] -> [B, D, H, W, O]."""
  return _conv(x, kernel, 1)


def down_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """3x3x3 conv, stride 2, pad 1: [B, D, H, W, I] -> [B, ceil(D/2), ceil(H/2), ceil(W/2), O]."""
  return _conv(x, kernel, 2)


# --- the transposed conv, weights [3, 3, 3, I, O] (torch's (I, O, k, k, k) moved) -------
@jax.custom_vjp
def up_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """ConvTranspose3d(k=3, s=2, p=1, output_padding=1): [B, D, H, W, I] -> [B, 2D, 2H, 2W, O].

  It is the backward data of a stride-2 conv from O to I channels whose weights are this
  kernel read as [3, 3, 3, OC=I, IC=O] (wt = 1)."""
  b, d, h, w, _ = x.shape
  return _call(_BWD_DATA, 2, 1, x, kernel, (b, 2 * d, 2 * h, 2 * w, kernel.shape[-1]))


def _up_fwd(x, kernel):
  return up_conv(x, kernel), (x, kernel)


def _up_bwd(res, g):
  x, kernel = res
  dx = _call(_FWD, 2, 1, g, kernel, x.shape)
  dk = _call(_BWD_WEIGHTS, 2, 1, g, x, kernel.shape)
  return dx, dk


up_conv.defvjp(_up_fwd, _up_bwd)
