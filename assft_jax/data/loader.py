"""Random-patch training loader on grain.

Sample i of the stream is a pure function of (seed, i): the case comes from a per-epoch
permutation of `ids`, and with probability `fg_fraction` the patch is centred on a
foreground voxel of a uniformly chosen present class (nnU-Net's oversampling; picking
the class first keeps small organs visible). Otherwise the patch position is uniform.
Volumes smaller than the patch are padded (image with the volume's pad value, label 0).

Augmentation is NOT done here: the trainer applies `augment.augment_batch` on device
(jitted, vmapped), so the host only slices patches.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence

import grain
import numpy as np

from .errors import DataError
from .geometry import crop_or_pad
from .preprocess import Volume

MAX_FG_LOCATIONS = 10_000  # per class and case, as nnU-Net


def make_loader(
  volumes: Mapping[str, Volume],
  ids: Sequence[str],
  patch: Sequence[int],
  batch_size: int,
  seed: int,
  pseudo: Mapping[str, np.ndarray] | None = None,
  fg_fraction: float = 1 / 3,
  num_batches: int | None = None,
  num_threads: int = 2,
) -> Iterator[dict[str, np.ndarray]]:
  """Iterator of {"image": [B, *patch, 1] float32, "label": [B, *patch] int32}.

  ids: the cases to draw from (e.g. this round's labeled set). pseudo: id -> label
  [D, H, W] that replaces the ground truth (or stands in for a missing one).
  num_batches: stream length; None = endless. Deterministic under `seed`.
  """
  ids = list(ids)
  pseudo = dict(pseudo or {})
  patch = tuple(int(p) for p in patch)
  _check_inputs(volumes, ids, pseudo, patch, batch_size, fg_fraction)
  sampler = _PatchSampler(volumes, ids, pseudo, patch, seed, fg_fraction)
  total = num_batches * batch_size if num_batches is not None else sys.maxsize // 2
  ds = grain.MapDataset.range(total).map(sampler).batch(batch_size, drop_remainder=True)
  opts = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * batch_size)
  return iter(ds.to_iter_dataset(opts))


def _check_inputs(volumes, ids, pseudo, patch, batch_size, fg_fraction):
  problems = []
  if not ids:
    problems.append("ids: empty list of cases")
  if len(patch) != 3 or min(patch) < 1:
    problems.append(f"patch: expected 3 positive sizes, got {patch}")
  if batch_size < 1:
    problems.append(f"batch_size: must be >= 1, got {batch_size}")
  if not 0.0 <= fg_fraction <= 1.0:
    problems.append(f"fg_fraction: must be in [0, 1], got {fg_fraction}")
  for cid in ids:
    if cid not in volumes:
      problems.append(f"{cid}: not among the prepared volumes")
    elif cid not in pseudo and volumes[cid].label is None:
      problems.append(f"{cid}: no label and no pseudo-label")
    elif cid in pseudo and np.shape(pseudo[cid]) != volumes[cid].image.shape[:3]:
      problems.append(
        f"{cid}: pseudo-label shape {np.shape(pseudo[cid])} differs from "
        f"image {volumes[cid].image.shape[:3]}"
      )
  if problems:
    raise DataError(problems, header="make_loader: bad arguments")


class _PatchSampler:
  """index -> one {"image": [*patch, 1], "label": [*patch]} sample."""

  def __init__(self, volumes, ids, pseudo, patch, seed, fg_fraction):
    self.volumes, self.ids, self.pseudo = volumes, ids, pseudo
    self.patch, self.seed, self.fg_fraction = patch, int(seed), fg_fraction
    self._fg = {}
    self._perms = {}  # per instance (a functools cache would keep old loaders alive)

  def _perm(self, epoch: int) -> np.ndarray:
    perm = self._perms.get(epoch)  # grain threads may race here: both compute the same
    if perm is None:
      perm = np.random.default_rng([self.seed, epoch, 0]).permutation(len(self.ids))
      if len(self._perms) > 8:
        self._perms = {}
      self._perms[epoch] = perm
    return perm

  def __call__(self, index: int) -> dict[str, np.ndarray]:
    n = len(self.ids)
    cid = self.ids[self._perm(index // n)[index % n]]
    rng = np.random.default_rng([self.seed, index, 1])
    vol = self.volumes[cid]
    label = self.pseudo[cid] if cid in self.pseudo else vol.label
    shape = vol.image.shape[:3]
    lo = [min(0, s - p) for s, p in zip(shape, self.patch)]
    hi = [max(0, s - p) for s, p in zip(shape, self.patch)]
    start = [int(rng.integers(a, b + 1)) for a, b in zip(lo, hi)]
    if rng.random() < self.fg_fraction:
      locs = self._locations(cid, label)
      if locs:
        classes = sorted(locs)
        pts = locs[classes[int(rng.integers(len(classes)))]]
        centre = pts[int(rng.integers(len(pts)))]
        start = [int(np.clip(c - p // 2, a, b)) for c, p, a, b in zip(centre, self.patch, lo, hi)]
    pad = vol.meta.get("pad_value")
    pad = float(np.min(vol.image)) if pad is None else pad
    return {
      "image": crop_or_pad(np.asarray(vol.image), start, self.patch, pad).astype(np.float32),
      "label": crop_or_pad(np.asarray(label), start, self.patch, 0).astype(np.int32),
    }

  def _locations(self, cid: str, label) -> dict[int, np.ndarray]:
    """class -> [K, 3] voxel coordinates (strided to <= MAX_FG_LOCATIONS), cached."""
    if cid not in self._fg:
      lab = np.asarray(label)
      flat = np.flatnonzero(lab > 0)
      values = lab.reshape(-1)[flat]
      out = {}
      for c in np.unique(values):
        sel = flat[values == c]
        sel = sel[:: max(1, -(-sel.size // MAX_FG_LOCATIONS))]
        out[int(c)] = np.stack(np.unravel_index(sel, lab.shape), axis=1)
      self._fg[cid] = out
    return self._fg[cid]
