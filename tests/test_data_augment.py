"""On-device augmentation: label set kept, identity, key determinism, and the geometry
against scipy's affine_transform with a matrix built here from the drawn parameters."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from assft_jax.data.augment import AugmentConfig, apply_params, augment_batch, sample_params

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


GEOMETRY = AugmentConfig(p_rotation=1.0, p_scale=1.0, p_mirror=0.5, p_noise=0, p_brightness=0)


def reference_matrix(params, shape):
  """(M [3, 3], offset [3]) such that output voxel o reads input M @ o + offset: rotation
  R0 @ R1 @ R2 (R_i turns the plane of the two other axes j < k by angles[i], from j
  toward k), then the mirrors, zoomed in by `scale`, about the centre of the volume."""

  def plane(a, j, k):
    m = np.eye(3)
    m[j, j] = m[k, k] = np.cos(a)
    m[k, j], m[j, k] = np.sin(a), -np.sin(a)
    return m

  a = np.asarray(params["angles"], np.float64)
  rot = plane(a[0], 1, 2) @ plane(a[1], 0, 2) @ plane(a[2], 0, 1)
  m = rot @ np.diag(np.where(np.asarray(params["flips"]), -1.0, 1.0)) / float(params["scale"])
  centre = (np.array(shape, np.float64) - 1) / 2
  return m, centre - m @ centre


def test_geometry_matches_scipy_affine_transform():
  """augment_batch against an independent reference: per sample, the drawn rotation,
  scale and mirrors as an explicit matrix, resampled by scipy in float64. Image at
  order 1 on a smooth unit-SD volume, atol 1e-5 (float32 coordinates err by ~1e-6);
  label at order 0, exact away from rounding ties (a source coordinate within 1e-3 of
  a half voxel)."""
  b = 6
  rng = np.random.default_rng(0)
  smooth = ndimage.gaussian_filter(rng.normal(size=(b, *SHAPE)), sigma=(0, 2, 2, 2))
  smooth /= smooth.std(axis=(1, 2, 3), keepdims=True)
  lab = rng.integers(0, 4, (b, *SHAPE)).astype(np.int32)
  key = jax.random.key(7)
  out_img, out_lab = augment_batch(key, jnp.asarray(smooth[..., None], jnp.float32), lab, GEOMETRY)
  # documented: sample i uses key split(rng, B)[i]
  params = [sample_params(k, GEOMETRY) for k in jax.random.split(key, b)]
  assert len({tuple(np.asarray(p["flips"]).tolist()) for p in params}) > 1  # mirrors vary
  grid = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")).reshape(3, -1)
  for i, p in enumerate(params):
    assert 0.7 <= float(p["scale"]) <= 1.4 and np.abs(np.asarray(p["angles"])).max() > 0
    m, offset = reference_matrix(p, SHAPE)
    ref = ndimage.affine_transform(smooth[i], m, offset=offset, order=1, mode="nearest")
    np.testing.assert_allclose(np.asarray(out_img[i, ..., 0]), ref, atol=1e-5)
    ref_lab = ndimage.affine_transform(lab[i], m, offset=offset, order=0, mode="nearest")
    src = m @ grid + offset[:, None]
    clear = (np.abs(src - np.floor(src) - 0.5) > 1e-3).all(axis=0).reshape(SHAPE)
    assert clear.mean() > 0.95
    np.testing.assert_array_equal(np.asarray(out_lab[i])[clear], ref_lab[clear])


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
