"""Shared helpers of the engine tests (no tests here): phantoms and cheap variables."""

import jax
import jax.numpy as jnp
import numpy as np


def phantom_batch(rng, n, s=16):
  """n noisy spheres: image = mask + N(0, 0.3) [n, s, s, s, 1], label = mask [n, s, s, s]."""
  z, y, x = np.meshgrid(*[np.arange(s)] * 3, indexing="ij")
  imgs, labs = [], []
  for _ in range(n):
    c, r = rng.uniform(5, s - 5, 3), rng.uniform(3, 5)
    lab = ((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 < r * r).astype(np.int32)
    imgs.append((lab + rng.normal(0, 0.3, lab.shape)).astype(np.float32)[..., None])
    labs.append(lab)
  return {"image": np.stack(imgs), "label": np.stack(labs)}


def fast_variables(module, spatial=16, seed=0):
  """He-normal kernels, zero biases, BN scale 1 / bias 0 / mean 0 / var 1, built from
  `jax.eval_shape` (tracing only): compiling `module.init` for the tiny nets costs up to a
  minute on the shared CPU, and the engine tests do not depend on the init scheme."""
  x = jnp.zeros((1, spatial, spatial, spatial, module.in_channels), jnp.float32)
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), x, train=False))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = jax.tree_util.keystr(path)
    if "batch_stats" in name:
      return np.ones(s.shape, np.float32) if "var" in name else np.zeros(s.shape, np.float32)
    if "kernel" in name:
      fan_in = int(np.prod(s.shape[:-1]))
      return (rng.normal(size=s.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    return np.ones(s.shape, np.float32) if "scale" in name else np.zeros(s.shape, np.float32)

  return jax.tree_util.tree_map_with_path(fill, dict(shapes))


def np_dice_ce(logits, labels, C, ignore=None):
  """Reference (numpy, float64): (per-sample soft Dice loss over classes 1..C-1, smooth
  1e-5, mean; mean CE over the non-ignored voxels). logits [B, *S, C], labels [B, *S]."""
  logits = np.asarray(logits, np.float64)
  e = np.exp(logits - logits.max(-1, keepdims=True))
  p = e / e.sum(-1, keepdims=True)
  valid = np.ones(labels.shape) if ignore is None else (labels != ignore).astype(float)
  lab = np.where(valid > 0, labels, 0)
  oh = np.eye(C)[lab]
  ce = -(np.log(np.take_along_axis(p, lab[..., None], -1))[..., 0] * valid).sum() / valid.sum()
  dices = []
  for b in range(labels.shape[0]):
    for c in range(1, C):
      pc, gc = p[b, ..., c] * valid[b], oh[b, ..., c] * valid[b]
      dices.append(1 - (2 * (pc * gc).sum() + 1e-5) / (pc.sum() + gc.sum() + 1e-5))
  return float(np.mean(dices)), float(ce)


def np_deep_supervision_loss(outs, labels, C):
  """Reference deep-supervision Dice+CE: level i (2^i times smaller, 2^i | size) sees the
  labels at voxels 2^i * d + 2^(i-1) (torch "nearest-exact"), weights 1/2^i summing to 1."""
  w = np.array([0.5**i for i in range(len(outs))])
  w /= w.sum()
  total = 0.0
  for i, (wi, o) in enumerate(zip(w, outs)):
    f = 2**i
    lab = labels[:, f // 2 :: f, f // 2 :: f, f // 2 :: f] if i else labels
    total += wi * sum(np_dice_ce(o, lab, C))
  return total
