"""The scoring pass: one forward per case gives every statistic the strategies need.

Per case, one sliding-window pass of the current model F(r) with return_features=True
yields the blended logits (-> softmax -> `scoring.kernels.reduce_case_stats`) and, per
window, the pooled bottleneck embedding and the BADGE gradient embedding
(`scoring.kernels.badge_embedding` on the window's own softmax and head input). With
several windows per case the window vectors are averaged (equal window sizes, so for
BADGE this is the voxel mean with overlap multiplicity); with one window per case (the
paper's fixed crops) they are exact.

Cases stream one at a time: only one case's probability map exists at any moment.

E(0) embeddings (the pre-trained encoder, never fine-tuned) are computed once per run
and cached as `<emb0_cache>/<case id>.npz` {emb, fingerprint, image}: the fingerprint
hashes the pre-trained encoder's variables, roi, overlap and conv kernel, and `image` the preprocessed volume
itself (shape, dtype, bytes), so an entry made with other weights or before a change of
crop, spacing or pipeline is recomputed, not reused (hashing is a fraction of a forward).
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from tqdm.auto import tqdm

from assft_jax import atomic
from assft_jax.engine import timing
from assft_jax.engine.evaluate import dice_per_class
from assft_jax.engine.infer import _triple, image_of, sliding_window
from assft_jax.models.layers import resolve_conv_impl
from assft_jax.scoring.kernels import badge_embedding, reduce_case_stats


@functools.partial(timing.jit, static_argnums=(0,))
def _score_windows(module: nn.Module, variables: Any, windows: jax.Array):
  logits, feats = module.apply(variables, windows, train=False, return_features=True)
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  badge = badge_embedding(probs, feats["head_in"].astype(jnp.float32))
  return logits, {"emb": feats["emb"].astype(jnp.float32), "badge": badge}


@functools.partial(timing.jit, static_argnums=(0,))
def _encoder_windows(module: nn.Module, variables: Any, windows: jax.Array):
  if hasattr(module, "encode"):
    enc = module.apply(variables, windows, train=False, method="encode")
  else:  # a bare SegResEncoder
    enc = module.apply(variables, windows, train=False)
  return None, {"emb": jnp.mean(enc[-1].astype(jnp.float32), axis=(1, 2, 3))}


_softmax = timing.jit(functools.partial(jax.nn.softmax, axis=-1))


def fingerprint(variables: Any, *extra: Any) -> str:
  """sha1 over the tree structure, every leaf's bytes and `extra` (a cache key)."""
  h = hashlib.sha1(str(jax.tree.structure(variables)).encode())
  for leaf in jax.tree.leaves(variables):
    h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
  h.update(repr(extra).encode())
  return h.hexdigest()


def image_digest(image: Any) -> str:
  """sha1 of a volume's shape, dtype and bytes: the E(0) cache key's data part."""
  a = np.ascontiguousarray(np.asarray(image))
  h = hashlib.sha1(f"{a.shape}{a.dtype}".encode())
  h.update(a.tobytes())
  return h.hexdigest()


class Emb0Cache:
  """E(0) embeddings by case id in memory and, with `directory`, as npz files.

  key: the fingerprint of the weights and window settings; None (no variables to check
  against) accepts any weights, but the image must still match.
  """

  def __init__(self, directory: str | os.PathLike | None, key: str | None):
    self.dir = Path(directory) if directory is not None else None
    self.key = key
    self.mem: dict[str, np.ndarray] = {}  # one pass: a case id means one image

  def _path(self, cid: str) -> Path:
    return self.dir / (str(cid).replace(os.sep, "__") + ".npz")

  def get(self, cid: str, digest: str) -> np.ndarray | None:
    if cid in self.mem:
      return self.mem[cid]
    if self.dir is None or not self._path(cid).is_file():
      return None
    with np.load(self._path(cid)) as z:
      if "image" not in z.files or str(z["image"]) != digest:
        return None  # another preprocessing or another volume under this id: recompute
      if self.key is not None and str(z["fingerprint"]) != self.key:
        return None  # computed with other pre-trained weights / roi: recompute
      self.mem[cid] = z["emb"]
    return self.mem[cid]

  def put(self, cid: str, digest: str, emb: np.ndarray) -> None:
    self.mem[cid] = emb
    if self.dir is not None:
      arrays = {"emb": emb, "fingerprint": np.asarray(self.key or ""), "image": np.asarray(digest)}
      atomic.write_npz(self._path(cid), arrays, compressed=False)


def _emb0(module, variables, image, cache: Emb0Cache, cid: str, sw: dict) -> np.ndarray:
  digest = image_digest(image)
  hit = cache.get(cid, digest)
  if hit is not None:
    return hit
  if variables is None:
    raise ValueError(
      f"no cached E(0) embedding for case {cid!r} and no emb0_variables to compute it"
    )
  _, ex = sliding_window(functools.partial(_encoder_windows, module), variables, image, **sw)
  emb = np.asarray(ex["emb"]).mean(axis=0)
  cache.put(cid, digest, emb)
  return emb


# Bumped when the code of an E(0) embedding changes its values (the key sees its inputs).
EMB0_VERSION = 2


def _emb0_cache(module: nn.Module, variables: Any, directory, sw: dict) -> Emb0Cache:
  """The cache keyed by the pre-trained weights, the window and the conv kernel that runs
  them (kernels differ in float32 rounding, enough to swap nearly tied PAKD ranks)."""
  if variables is None:
    return Emb0Cache(directory, None)
  # Only the encoder makes E(0): F(0)'s fresh decoder differs by seed, and the embeddings
  # of one pre-trained encoder are shared by every seed's runs.
  encoder = {c: v["encoder"] for c, v in variables.items() if "encoder" in v} or variables
  impl = resolve_conv_impl(module.conv_impl, module.dtype)
  return Emb0Cache(directory, fingerprint(encoder, sw["roi"], sw["overlap"], impl, EMB0_VERSION))


def embed0(
  module: nn.Module,
  variables: Any,
  volumes: Mapping[str, Any],
  ids: Sequence[str],
  *,
  roi: int | Sequence[int],
  cache: str | os.PathLike | None = None,
  overlap: float = 0.5,
  mode: str = "gaussian",
  sw_batch_size: int = 4,
) -> np.ndarray:
  """E(0) embeddings [N, F] of `ids`: the encoder alone, through the same cache (and
  cache key) as `score_pass`'s "emb_0", so a later scoring pass reads them back."""
  sw = dict(roi=_triple(roi), overlap=overlap, mode=mode, sw_batch_size=sw_batch_size)
  c = _emb0_cache(module, variables, cache, sw)
  return np.stack([_emb0(module, variables, image_of(volumes[cid]), c, cid, sw) for cid in ids])


def _mean_fg_dice(logits: jax.Array, label: np.ndarray | None) -> float:
  """logits [D, H, W, C]: the mean Dice of their argmax (`predict_labels`' labels) over
  the foreground classes `dice_per_class` keeps; NaN if none is kept or no label."""
  if label is None:
    return float("nan")
  pred = np.asarray(jnp.argmax(logits, axis=-1).astype(jnp.int32))
  d = dice_per_class(pred, label, logits.shape[-1])
  d = d[~np.isnan(d)]
  return float(d.mean()) if len(d) else float("nan")


def score_pass(
  module: nn.Module,
  variables: Any,
  volumes: Mapping[str, Any],
  ids: Sequence[str],
  *,
  roi: int | Sequence[int],
  r: int,
  R: int,
  emb0_variables: Any = None,
  emb0_cache: str | os.PathLike | None = None,
  overlap: float = 0.5,
  mode: str = "gaussian",
  sw_batch_size: int = 4,
  progress: bool = False,
) -> dict[str, Any]:
  """Per-case statistics of `ids` (see the module docstring).

  volumes: id -> `data.Volume` or image [D, H, W, Cin]. r, R: round and number of
  rounds (ASD temperature). emb0_variables: the PRE-TRAINED variables (E(0)); with
  them or with `emb0_cache` holding every case, "emb_0" is added (computed with
  `module`'s encoder).
  Returns {"ids": list, every `reduce_case_stats` key: [N] float32, "emb_r": [N, F],
  "badge": [N, C * init_filters], "dice_gt": [N] float64, "emb_0": [N, F] (when
  available)}. dice_gt: the mean foreground Dice of the argmax labels against the
  volume's label, with `engine.evaluate`'s per-class rule (a class absent from both is
  left out); NaN without a label or when no class is left. Never used for training.
  """
  sw = dict(roi=_triple(roi), overlap=overlap, mode=mode, sw_batch_size=sw_batch_size)
  want_emb0 = emb0_variables is not None or emb0_cache is not None
  cache = _emb0_cache(module, emb0_variables, emb0_cache, sw)
  rows: dict[str, list] = {}
  score_fn = functools.partial(_score_windows, module)
  for cid in tqdm(ids, desc=f"score r={r}", disable=not progress, leave=False):
    image = image_of(volumes[cid])
    logits, ex = sliding_window(score_fn, variables, image, **sw)
    stats = reduce_case_stats(_softmax(logits)[None], r, R)
    dice_gt = _mean_fg_dice(logits, getattr(volumes[cid], "label", None))
    del logits  # only one case's probability map is ever alive
    row = {k: np.asarray(v)[0] for k, v in stats.items()}
    row.update(
      emb_r=np.asarray(ex["emb"]).mean(axis=0),
      badge=np.asarray(ex["badge"]).mean(axis=0),
      dice_gt=dice_gt,
    )
    if want_emb0:
      row["emb_0"] = _emb0(module, emb0_variables, image, cache, cid, sw)
    for k, v in row.items():
      rows.setdefault(k, []).append(v)
  out: dict[str, Any] = {"ids": list(ids)}
  out.update({k: np.stack(v) for k, v in rows.items()})
  return out
