"""Grain patch loader: shapes, determinism, foreground oversampling, ids, pseudo."""

import numpy as np
import pytest

from assft_jax.data import DataError
from assft_jax.data.loader import make_loader
from assft_jax.data.preprocess import Volume


def volumes(n=4, shape=(24, 24, 24), fg_box=2):
  """Case i: image constant i (so patches name their case), one tiny fg cube."""
  out = {}
  for i in range(n):
    lab = np.zeros(shape, np.int32)
    lab[3 : 3 + fg_box, 4 : 4 + fg_box, 5 : 5 + fg_box] = 1 + i % 2
    img = np.full(shape + (1,), float(i), np.float32)
    out[f"v{i}"] = Volume(img, lab, {"pad_value": -1.0})
  return out


def take(it, k):
  return [next(it) for _ in range(k)]


def test_shapes_and_dtypes():
  it = make_loader(volumes(), ["v0", "v1"], (8, 8, 8), batch_size=3, seed=0)
  b = next(it)
  assert b["image"].shape == (3, 8, 8, 8, 1) and b["image"].dtype == np.float32
  assert b["label"].shape == (3, 8, 8, 8) and b["label"].dtype == np.int32


def test_deterministic_under_seed():
  vols = volumes()
  a = take(make_loader(vols, list(vols), (8, 8, 8), 2, seed=5), 6)
  b = take(make_loader(vols, list(vols), (8, 8, 8), 2, seed=5), 6)
  c = take(make_loader(vols, list(vols), (8, 8, 8), 2, seed=6), 6)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])
  assert any(
    not np.array_equal(x["label"], z["label"]) or not np.array_equal(x["image"], z["image"])
    for x, z in zip(a, c)
  )


def test_num_batches_and_epoch_coverage():
  vols = volumes(n=4)
  batches = list(make_loader(vols, list(vols), (8, 8, 8), 2, seed=0, num_batches=6))
  assert len(batches) == 6
  cases = [int(img[0, 0, 0, 0]) for b in batches for img in b["image"]]
  # each epoch (4 consecutive samples) is a permutation of the cases
  for e in range(3):
    assert sorted(cases[4 * e : 4 * e + 4]) == [0, 1, 2, 3]


def test_foreground_oversampling_rate():
  # fg is one voxel in 24^3, so a random 8^3 patch rarely holds it. Measure that
  # rate p_random with fg_fraction=0, then check the loader's rate against
  # f + (1 - f) * p_random within 4 binomial SDs.
  vols = volumes(n=2, fg_box=1)
  n_batches, bs = 150, 4
  rand = list(
    make_loader(vols, list(vols), (8, 8, 8), bs, seed=1, fg_fraction=0.0, num_batches=n_batches)
  )
  p_rand = np.mean([(lab > 0).any() for b in rand for lab in b["label"]])
  fg = list(make_loader(vols, list(vols), (8, 8, 8), bs, seed=2, num_batches=n_batches))
  rate = np.mean([(lab > 0).any() for b in fg for lab in b["label"]])
  f = 1 / 3
  expected = f + (1 - f) * p_rand
  n = n_batches * bs  # both rates are estimates: add their variances
  sd = np.sqrt(expected * (1 - expected) / n + (1 - f) ** 2 * p_rand * (1 - p_rand) / n)
  assert abs(rate - expected) < 4 * sd, (rate, expected, p_rand)
  always = list(
    make_loader(vols, list(vols), (8, 8, 8), bs, seed=3, fg_fraction=1.0, num_batches=20)
  )
  assert all((lab > 0).any() for b in always for lab in b["label"])


def test_ids_subset_and_pseudo_labels():
  vols = volumes(n=4)
  vols["v3"] = Volume(vols["v3"].image, None, {})  # unlabeled
  pseudo = {"v3": np.full((24, 24, 24), 7, np.int32)}
  batches = list(
    make_loader(vols, ["v1", "v3"], (8, 8, 8), 2, seed=0, pseudo=pseudo, num_batches=8)
  )
  for b in batches:
    for img, lab in zip(b["image"], b["label"]):
      case = int(img[0, 0, 0, 0])
      assert case in (1, 3)
      if case == 3:
        assert (lab == 7).all()
      else:
        assert set(np.unique(lab)) <= {0, 2}
  with pytest.raises(DataError, match="v3: no label and no pseudo-label"):
    make_loader(vols, ["v3"], (8, 8, 8), 2, seed=0)


def test_small_volume_is_padded():
  lab = np.ones((4, 5, 6), np.int32)
  vols = {"s": Volume(np.zeros((4, 5, 6, 1), np.float32), lab, {"pad_value": -3.0})}
  b = next(make_loader(vols, ["s"], (8, 8, 8), 2, seed=0))
  assert b["image"].shape == (2, 8, 8, 8, 1)
  for img, lbl in zip(b["image"], b["label"]):
    assert (lbl == 1).sum() == 4 * 5 * 6  # the whole volume is inside the patch
    assert ((img[..., 0] == -3.0) == (lbl == 0)).all()


def test_iterator_state_resumes_the_stream():
  vols = volumes(n=3)
  it = make_loader(vols, list(vols), (8, 8, 8), 2, seed=4)
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = take(it, 2)
  resumed = make_loader(vols, list(vols), (8, 8, 8), 2, seed=4)
  resumed.set_state(state)
  for x, y in zip(expected, take(resumed, 2)):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])
