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
