"""Sliding-window inference with MONAI `sliding_window_inference` semantics.

Same as monai 1.6.1 (`monai/inferers/utils.py`, `monai/data/utils.py`):
- a spatial dim smaller than the roi is zero-padded (diff // 2 before, the rest after)
  and the output is cropped back;
- scan interval int(roi * (1 - overlap)) (the roi itself where the padded size equals
  it, at least 1); window starts idx * interval, the last shifted back to end at the
  border (`dense_patch_slices`), row-major order;
- importance map: ones ("constant") or the separable gaussian exp(-x^2 / (2 sigma^2)),
  sigma = sigma_scale * roi, x centred, peak 1, clamped below at max(min, 1e-3);
- output = sum_w(w * window_out) / sum_w(w).

The window runner is pluggable: `sliding_window(window_fn, variables, image, roi, ...)`
takes `window_fn(variables, windows [n, *roi, Cin]) -> (logits [n, *roi, C] | None,
extras {name: [n, ...]})`, so the scoring pass reuses the placement and blending and
collects per-window features from the same forward. Windows go through in fixed-size
batches of min(sw_batch_size, n_windows) (the last batch is filled with repeats of the
last window, which get weight 0), so the forward compiles once per roi and batch size. Window gathering and the
weighted accumulation are jitted too and stay on the device.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from assft_jax.engine import timing

WindowFn = Callable[[Any, jax.Array], tuple[jax.Array | None, dict[str, jax.Array]]]


def _triple(x: int | Sequence[int]) -> tuple[int, int, int]:
  t = (int(x),) * 3 if np.isscalar(x) else tuple(int(v) for v in x)
  if len(t) != 3 or min(t) < 1:
    raise ValueError(f"roi must be 3 positive ints, got {x!r}")
  return t


def image_of(volume: Any) -> np.ndarray:
  """[D, H, W, Cin] image of a `data.Volume` (its .image) or of a bare array."""
  return volume.image if hasattr(volume, "image") else volume


def pad_widths(size: Sequence[int], roi: Sequence[int]) -> list[tuple[int, int]]:
  """Per spatial dim (before, after) zero padding that brings `size` up to `roi`."""
  out = []
  for s, r in zip(size, roi):
    diff = max(r - s, 0)
    out.append((diff // 2, diff - diff // 2))
  return out


def window_starts(size: Sequence[int], roi: Sequence[int], overlap: float) -> np.ndarray:
  """[n_windows, 3] int32 start corners over a (padded) volume of `size` >= roi."""
  if not 0 <= overlap < 1:
    raise ValueError(f"overlap must be in [0, 1), got {overlap}")
  per_dim = []
  for s, r in zip(size, roi):
    interval = r if r == s else max(int(r * (1 - overlap)), 1)
    n = next((d for d in range(math.ceil(s / interval)) if d * interval + r >= s), 0) + 1
    per_dim.append([i * interval - max(i * interval + r - s, 0) for i in range(n)])
  grid = np.meshgrid(*per_dim, indexing="ij")
  return np.stack([g.ravel() for g in grid], axis=1).astype(np.int32)


def importance_map(
  roi: Sequence[int], mode: str = "gaussian", sigma_scale: float = 0.125
) -> np.ndarray:
  """[*roi] float32 blending weights (MONAI `compute_importance_map`)."""
  if mode == "constant":
    return np.ones(tuple(roi), np.float32)
  if mode != "gaussian":
    raise ValueError(f"mode must be 'gaussian' or 'constant', got {mode!r}")
  w = None
  for r in roi:
    x = np.arange(-(r - 1) / 2.0, (r - 1) / 2.0 + 1, dtype=np.float32)
    g = np.exp(x**2 / np.float32(-2 * (r * sigma_scale) ** 2)).astype(np.float32)
    w = g if w is None else w[..., None] * g
  return np.maximum(w, max(float(w.min()), 1e-3)).astype(np.float32)


@functools.partial(timing.jit, static_argnums=(2,))
def _gather(image: jax.Array, starts: jax.Array, roi: tuple[int, int, int]) -> jax.Array:
  """image [D, H, W, Cin], starts [n, 3] -> windows [n, *roi, Cin]."""
  size = (*roi, image.shape[-1])
  return jax.vmap(lambda s: jax.lax.dynamic_slice(image, (*s, 0), size))(starts)


@functools.partial(timing.jit, donate_argnums=(0,))
def _accumulate(
  acc: jax.Array, logits: jax.Array, starts: jax.Array, weight: jax.Array, valid: jax.Array
) -> jax.Array:
  """acc [D, H, W, C + 1] += w * [logits, 1] at each valid window (last channel = sum w)."""
  logits = logits.astype(jnp.float32)
  ones = jnp.ones(logits.shape[:-1] + (1,), jnp.float32)
  w = weight[None, ..., None] * valid.astype(jnp.float32)[:, None, None, None, None]
  vals = jnp.concatenate([logits, ones], axis=-1) * w

  def body(i, a):
    idx = (*starts[i], 0)
    cur = jax.lax.dynamic_slice(a, idx, vals.shape[1:])
    return jax.lax.dynamic_update_slice(a, cur + vals[i], idx)

  return jax.lax.fori_loop(0, vals.shape[0], body, acc)


@functools.partial(timing.jit, static_argnums=(1,))
def _finish(acc: jax.Array, crop: tuple[tuple[int, int], ...]) -> jax.Array:
  out = acc[..., :-1] / acc[..., -1:]
  return out[tuple(slice(lo, lo + n) for lo, n in crop)]


def sliding_window(
  window_fn: WindowFn,
  variables: Any,
  image: jax.Array | np.ndarray,
  roi: int | Sequence[int],
  *,
  overlap: float = 0.5,
  mode: str = "gaussian",
  sw_batch_size: int = 4,
  sigma_scale: float = 0.125,
) -> tuple[jax.Array | None, dict[str, jax.Array]]:
  """Runs `window_fn` over MONAI's windows of image [D, H, W, Cin].

  Returns (blended logits [D, H, W, C] float32 or None when window_fn returns None,
  extras {name: [n_windows, ...]} in window order).
  """
  roi = _triple(roi)
  image = jnp.asarray(image, jnp.float32)
  if image.ndim != 4:
    raise ValueError(f"image must be [D, H, W, Cin], got shape {image.shape}")
  size = image.shape[:3]
  pads = pad_widths(size, roi)
  if any(p != (0, 0) for p in pads):
    image = jnp.pad(image, pads + [(0, 0)])
  starts = window_starts(image.shape[:3], roi, overlap)
  weight = jnp.asarray(importance_map(roi, mode, sigma_scale))
  n = len(starts)
  # never pad a batch beyond the number of windows (a one-window case runs batch 1)
  sw_batch_size = max(1, min(int(sw_batch_size), n))
  acc, extras = None, []
  for b0 in range(0, n, sw_batch_size):
    idx = np.arange(b0, b0 + sw_batch_size)
    n_valid = int(min(sw_batch_size, n - b0))
    st = jnp.asarray(starts[np.minimum(idx, n - 1)])
    logits, ex = window_fn(variables, _gather(image, st, roi))
    extras.append({k: v[:n_valid] for k, v in ex.items()})
    if logits is not None:
      if acc is None:
        acc = jnp.zeros(image.shape[:3] + (logits.shape[-1] + 1,), jnp.float32)
      acc = _accumulate(acc, logits, st, weight, jnp.asarray(idx < n))
  merged = {k: jnp.concatenate([e[k] for e in extras]) for k in (extras[0] if extras else {})}
  if acc is None:
    return None, merged
  return _finish(acc, tuple((lo, s) for (lo, _), s in zip(pads, size))), merged


@functools.partial(timing.jit, static_argnums=(0,))
def _logits_windows(module: nn.Module, variables: Any, windows: jax.Array):
  return module.apply(variables, windows, train=False), {}


def sliding_window_predict(
  module: nn.Module,
  variables: Any,
  image: jax.Array | np.ndarray,
  roi: int | Sequence[int],
  overlap: float = 0.5,
  mode: str = "gaussian",
  sw_batch_size: int = 4,
  sigma_scale: float = 0.125,
) -> jax.Array:
  """Logits [D, H, W, C] float32 of `module` (eval mode) on image [D, H, W, Cin]."""
  fn = functools.partial(_logits_windows, module)
  logits, _ = sliding_window(
    fn,
    variables,
    image,
    roi,
    overlap=overlap,
    mode=mode,
    sw_batch_size=sw_batch_size,
    sigma_scale=sigma_scale,
  )
  return logits
