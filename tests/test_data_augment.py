"""On-device augmentation: label set kept, identity, key determinism, scipy parity."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from assft_jax.data.augment import (
  AugmentConfig,
  apply_params,
  augment_batch,
  sample_params,
  source_coords,
)

SHAPE = (12, 14, 16)
apply_jit = jax.jit(apply_params)  # one compile for every single-sample test


def batch(b=3, shape=SHAPE, seed=0):
  rng = np.random.default_rng(seed)
  img = rng.normal(size=(b, *shape, 1)).astype(np.float32)
  lab = rng.integers(0, 5, (b, *shape)).astype(np.int32)
  lab[lab == 3] = 4  # a label set with a gap: {0, 1, 2, 4}
  return jnp.asarray(img), jnp.asarray(lab)


ALWAYS = AugmentConfig(p_rotation=1.0, p_scale=1.0, p_mirror=0.5, p_noise=1.0, p_brightness=1.0)


def identity_params(key):
  return {
    "angles": jnp.zeros(3),
    "scale": jnp.float32(1.0),
    "flips": jnp.zeros(3, bool),
    "noise_std": jnp.float32(0.0),
    "brightness": jnp.float32(1.0),
    "noise_key": key,
  }


def test_labels_stay_in_label_set_and_shapes():
  img, lab = batch()
  out_img, out_lab = augment_batch(jax.random.key(0), img, lab, ALWAYS)
  assert out_img.shape == img.shape and out_img.dtype == img.dtype
  assert out_lab.shape == lab.shape and out_lab.dtype == lab.dtype
  assert set(np.unique(np.asarray(out_lab))) <= {0, 1, 2, 4}


def test_identity_params_give_identity():
  img, lab = batch(b=1)
  out_img, out_lab = apply_jit(img[0], lab[0], identity_params(jax.random.key(1)))
  np.testing.assert_array_equal(np.asarray(out_lab), np.asarray(lab[0]))
  np.testing.assert_allclose(np.asarray(out_img), np.asarray(img[0]), atol=1e-6)
  # all probabilities zero -> the sampled parameters are the identity ones
  off = AugmentConfig(p_rotation=0, p_scale=0, p_mirror=0, p_noise=0, p_brightness=0)
  drawn = sample_params(jax.random.key(2), off)
  for k, v in identity_params(jax.random.key(2)).items():
    if k != "noise_key":
      np.testing.assert_array_equal(np.asarray(drawn[k]), np.asarray(v), err_msg=k)


def test_same_key_same_output_different_key_differs():
  img, lab = batch()
  a = augment_batch(jax.random.key(3), img, lab, ALWAYS)
  b = augment_batch(jax.random.key(3), img, lab, ALWAYS)
  c = augment_batch(jax.random.key(4), img, lab, ALWAYS)
  np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
  np.testing.assert_array_equal(np.asarray(a[1]), np.asarray(b[1]))
  assert not np.array_equal(np.asarray(a[0]), np.asarray(c[0]))


def test_mirror_only_is_a_flip():
  img, lab = batch(b=1)
  p = identity_params(jax.random.key(0))
  p["flips"] = jnp.array([True, False, True])
  out_img, out_lab = apply_jit(img[0], lab[0], p)
  np.testing.assert_array_equal(np.asarray(out_lab), np.asarray(lab[0])[::-1, :, ::-1])
  np.testing.assert_allclose(np.asarray(out_img), np.asarray(img[0])[::-1, :, ::-1], atol=1e-6)


def test_spatial_transform_matches_scipy_map_coordinates():
  img, lab = batch(b=1)
  p = identity_params(jax.random.key(0))
  p.update(
    angles=jnp.deg2rad(jnp.array([17.0, -23.0, 9.0])),
    scale=jnp.float32(1.23),
    flips=jnp.array([False, True, False]),
  )
  out_img, out_lab = apply_jit(img[0], lab[0], p)
  coords = np.asarray(source_coords(lab.shape[1:], p), np.float64)
  ref_img = ndimage.map_coordinates(np.asarray(img[0, ..., 0]), coords, order=1, mode="nearest")
  np.testing.assert_allclose(np.asarray(out_img[..., 0]), ref_img, atol=1e-5)
  # nearest: scipy rounds half away from zero at exact ties; random angles avoid ties
  ref_lab = ndimage.map_coordinates(np.asarray(lab[0]), coords, order=0, mode="nearest")
  np.testing.assert_array_equal(np.asarray(out_lab), ref_lab)


def test_noise_and_brightness_statistics():
  img = jnp.zeros((1, *SHAPE, 1))
  lab = jnp.zeros((1, *SHAPE), jnp.int32)
  p = identity_params(jax.random.key(5))
  p.update(noise_std=jnp.float32(0.3), brightness=jnp.float32(1.0))
  out, _ = apply_jit(img[0] + 1.0, lab[0], p)
  x = np.asarray(out) - 1.0
  assert abs(x.std() - 0.3) < 0.02 and abs(x.mean()) < 0.02
  p.update(noise_std=jnp.float32(0.0), brightness=jnp.float32(1.2))
  out, _ = apply_jit(img[0] + 2.0, lab[0], p)
  np.testing.assert_allclose(np.asarray(out), 2.4, rtol=1e-6)
