"""On-device augmentation (paper §4.2), jitted and vmapped over the batch.

Per sample, in this order: rotation in [-30°, 30°] about each of the 3 axes (p 0.2),
isotropic scaling in (0.7, 1.4) (p 0.2), mirroring of each axis (p 0.5 each), additive
zero-mean Gaussian noise with variance ~ U(0, 0.1) (p 0.15) and multiplicative
brightness ~ U(0.75, 1.25) (p 0.15, nnU-Net's range). The spatial part is ONE
transform per sample, shared by image (linear) and label (nearest), about the patch
centre, in voxel units; outside the patch both extend their edge values ("nearest")
so image and label stay consistent.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class AugmentConfig:
  p_rotation: float = 0.2
  max_angle_deg: float = 30.0
  p_scale: float = 0.2
  scale_range: tuple[float, float] = (0.7, 1.4)
  p_mirror: float = 0.5
  mirror_axes: tuple[int, ...] = (0, 1, 2)
  p_noise: float = 0.15
  noise_variance: tuple[float, float] = (0.0, 0.1)
  p_brightness: float = 0.15
  brightness_range: tuple[float, float] = (0.75, 1.25)


def sample_params(key: jax.Array, cfg: AugmentConfig) -> dict[str, jax.Array]:
  """Random parameters of one sample; an identity draw has angles 0, scale 1,
  no flips, noise_std 0, brightness 1."""
  k = jax.random.split(key, 10)
  rot_on = jax.random.uniform(k[0]) < cfg.p_rotation
  angles = jax.random.uniform(k[1], (3,), minval=-1.0, maxval=1.0) * jnp.deg2rad(cfg.max_angle_deg)
  scale_on = jax.random.uniform(k[2]) < cfg.p_scale
  scale = jax.random.uniform(k[3], minval=cfg.scale_range[0], maxval=cfg.scale_range[1])
  axes = jnp.zeros(3, bool).at[jnp.asarray(cfg.mirror_axes, int)].set(True)
  flips = (jax.random.uniform(k[4], (3,)) < cfg.p_mirror) & axes
  noise_on = jax.random.uniform(k[5]) < cfg.p_noise
  var = jax.random.uniform(k[6], minval=cfg.noise_variance[0], maxval=cfg.noise_variance[1])
  bright_on = jax.random.uniform(k[7]) < cfg.p_brightness
  bright = jax.random.uniform(k[8], minval=cfg.brightness_range[0], maxval=cfg.brightness_range[1])
  return {
    "angles": jnp.where(rot_on, angles, 0.0),
    "scale": jnp.where(scale_on, scale, 1.0),
    "flips": flips,
    "noise_std": jnp.where(noise_on, jnp.sqrt(var), 0.0),
    "brightness": jnp.where(bright_on, bright, 1.0),
    "noise_key": k[9],
  }


def rotation_matrix(angles: jax.Array) -> jax.Array:
  """[3] radians about axes 0, 1, 2 -> [3, 3] rotation R0 @ R1 @ R2, where R_i turns
  the plane of the two other axes j < k by angles[i], from axis j toward axis k."""

  def rot(a, i, j):
    c, s = jnp.cos(a), jnp.sin(a)
    m = jnp.eye(3)
    return m.at[i, i].set(c).at[j, j].set(c).at[i, j].set(-s).at[j, i].set(s)

  return rot(angles[0], 1, 2) @ rot(angles[1], 0, 2) @ rot(angles[2], 0, 1)


def source_coords(shape: tuple[int, int, int], params: dict) -> jax.Array:
  """[3, D, H, W] input coordinates sampled by each output voxel."""
  centre = (jnp.asarray(shape, jnp.float32) - 1) / 2
  grid = jnp.stack(
    jnp.meshgrid(*[jnp.arange(n, dtype=jnp.float32) for n in shape], indexing="ij")
  ).reshape(3, -1)
  flip = jnp.where(params["flips"], -1.0, 1.0)
  # scale > 1 zooms in: output voxels read from a smaller input neighbourhood
  m = rotation_matrix(params["angles"]) * flip[None, :] / params["scale"]
  src = m @ (grid - centre[:, None]) + centre[:, None]
  return src.reshape(3, *shape)


def apply_params(image: jax.Array, label: jax.Array, params: dict) -> tuple[jax.Array, jax.Array]:
  """image [D, H, W, C] float, label [D, H, W] int -> same shapes, one transform."""
  coords = source_coords(label.shape, params)
  warp = partial(jax.scipy.ndimage.map_coordinates, coordinates=list(coords), mode="nearest")
  img = jnp.stack([warp(image[..., c], order=1) for c in range(image.shape[-1])], axis=-1)
  lab = warp(label, order=0).astype(label.dtype)
  noise = jax.random.normal(params["noise_key"], img.shape, img.dtype)
  img = (img + params["noise_std"] * noise) * params["brightness"]
  return img.astype(image.dtype), lab


@partial(jax.jit, static_argnames=("cfg",))
def augment_batch(
  rng: jax.Array, image: jax.Array, label: jax.Array, cfg: AugmentConfig = AugmentConfig()
) -> tuple[jax.Array, jax.Array]:
  """image [B, D, H, W, C] float32, label [B, D, H, W] int32 -> augmented, same shapes.
  Sample b uses key split(rng, B)[b]; the same key gives the same output."""
  keys = jax.random.split(rng, image.shape[0])
  params = jax.vmap(sample_params, in_axes=(0, None))(keys, cfg)
  return jax.vmap(apply_params)(image, label, params)
