"""Training loss: soft Dice over the foreground classes + cross-entropy (paper §4.2).

L = L_Dice + L_CE, as MONAI `DiceCELoss(to_onehot_y=True, softmax=True,
include_background=False)` with its defaults (per-sample Dice, smooth_nr = smooth_dr =
1e-5, CE mean over voxels). Voxels equal to `ignore_index` count in neither term.

Deep supervision (SegResNetDS with dsdepth > 1 returns a list of logits, full resolution
first): the labels are resized to each level with PyTorch's "nearest-exact" rule, which
is what MONAI `DeepSupervisionLoss` does, and the level losses are weighted 1/2^i
(MONAI's "exp" mode) then normalised to sum 1, so the loss scale does not depend on
dsdepth (MONAI leaves the weights unnormalised; only the scale differs).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

SMOOTH = 1e-5


def nearest_exact_resize(labels: jax.Array, shape: Sequence[int]) -> jax.Array:
  """labels [B, *S] -> [B, *shape] with torch's `nearest-exact` index rule:
  src = floor((dst + 0.5) * in / out), clipped (for 2x down that is voxel 2d + 1)."""
  out = labels
  for axis, (n_in, n_out) in enumerate(zip(labels.shape[1:], shape), start=1):
    if n_in == n_out:
      continue
    idx = np.minimum(np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int32), n_in - 1)
    out = jnp.take(out, idx, axis=axis)
  return out


def default_ds_weights(levels: int) -> tuple[float, ...]:
  """1/2^i for i < levels (floored at 1/16 like MONAI), normalised to sum 1."""
  w = np.array([max(0.5**i, 0.0625) for i in range(levels)])
  return tuple(float(x) for x in w / w.sum())


def _dice_ce_single(
  logits: jax.Array, labels: jax.Array, num_classes: int, ignore_index: int | None
) -> tuple[jax.Array, jax.Array]:
  """(Dice loss, CE loss) of one output. logits [B, *S, C], labels [B, *S] int."""
  logits = logits.astype(jnp.float32)
  b = logits.shape[0]
  if ignore_index is None:
    valid = jnp.ones(labels.shape, jnp.float32)
    safe = labels
  else:
    valid = (labels != ignore_index).astype(jnp.float32)
    safe = jnp.where(labels == ignore_index, 0, labels)
  logp = jax.nn.log_softmax(logits, axis=-1)
  onehot = jax.nn.one_hot(safe, num_classes, dtype=jnp.float32)
  # CE: mean over the labeled voxels of the whole batch.
  nll = -jnp.sum(onehot * logp, axis=-1) * valid
  ce = nll.sum() / jnp.maximum(valid.sum(), 1.0)
  # Soft Dice per sample and foreground class, then the mean (MONAI batch=False).
  p = jnp.exp(logp) * valid[..., None]
  g = onehot * valid[..., None]
  p = p.reshape(b, -1, num_classes)[..., 1:]
  g = g.reshape(b, -1, num_classes)[..., 1:]
  inter = jnp.sum(p * g, axis=1)
  denom = jnp.sum(p, axis=1) + jnp.sum(g, axis=1)
  dice = 1.0 - (2.0 * inter + SMOOTH) / (denom + SMOOTH)
  return dice.mean(), ce


def hard_dice(
  logits: jax.Array, labels: jax.Array, num_classes: int, ignore_index: int | None = None
) -> jax.Array:
  """Dice of argmax(logits) on the whole batch, mean over the foreground classes present
  in the labels or the prediction (1.0 when none is). logits [B, *S, C]; returns []."""
  pred = jnp.argmax(logits, axis=-1)
  valid = jnp.ones(labels.shape, bool) if ignore_index is None else labels != ignore_index
  cls = jnp.arange(1, num_classes)
  pm = (pred[..., None] == cls) & valid[..., None]
  gm = (labels[..., None] == cls) & valid[..., None]
  axes = tuple(range(labels.ndim))
  inter = jnp.sum(pm & gm, axis=axes).astype(jnp.float32)
  denom = (jnp.sum(pm, axis=axes) + jnp.sum(gm, axis=axes)).astype(jnp.float32)
  present = denom > 0
  per_class = jnp.where(present, 2.0 * inter / jnp.maximum(denom, 1.0), 0.0)
  n = present.sum()
  return jnp.where(n > 0, per_class.sum() / jnp.maximum(n, 1), 1.0)


def dice_ce_loss(
  logits: jax.Array | Sequence[jax.Array],
  labels: jax.Array,
  num_classes: int,
  ignore_index: int | None = None,
  ds_weights: Sequence[float] | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Dice + CE loss and metrics.

  logits: [B, D, H, W, C] (any dtype; computed in float32), or a list of such at
    decreasing resolution (deep supervision, full resolution first).
  labels: [B, D, H, W] int, values in [0, C) or `ignore_index`.
  ds_weights: per-level weights for a list of logits (default `default_ds_weights`).
  Returns (loss [], {"loss", "dice_loss", "ce", "dice"}) where "dice" is the hard batch
  Dice of the full-resolution output (`hard_dice`).
  """
  outs = list(logits) if isinstance(logits, (list, tuple)) else [logits]
  if ds_weights is None:
    ds_weights = default_ds_weights(len(outs))
  if len(ds_weights) < len(outs):
    raise ValueError(f"ds_weights has {len(ds_weights)} entries for {len(outs)} outputs")
  if outs[0].shape[:-1] != labels.shape or outs[0].shape[-1] != num_classes:
    raise ValueError(
      f"logits {outs[0].shape} do not match labels {labels.shape} with num_classes={num_classes}"
    )
  total = dice_t = ce_t = 0.0
  for w, out in zip(ds_weights, outs):
    lab = nearest_exact_resize(labels, out.shape[1:-1])
    d, c = _dice_ce_single(out, lab, num_classes, ignore_index)
    total, dice_t, ce_t = total + w * (d + c), dice_t + w * d, ce_t + w * c
  metrics = {
    "loss": total,
    "dice_loss": dice_t,
    "ce": ce_t,
    "dice": hard_dice(outs[0], labels, num_classes, ignore_index),
  }
  return total, metrics
