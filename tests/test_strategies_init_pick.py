"""The r = 0 pick (--init_pick): first, random, medoid."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from assft_jax.strategies import StrategyError, pick_initial

IDS = [f"case{i:02d}" for i in range(25)]


def _no_embed(ids):
  raise AssertionError("embed0 must not be called for this rule")


def test_first_and_random_do_not_embed():
  assert pick_initial("first", IDS, 0, _no_embed) == "case00"
  picks = [pick_initial("random", IDS, s, _no_embed) for s in range(6)]
  assert picks == [pick_initial("random", IDS, s, _no_embed) for s in range(6)]  # seeded
  assert len(set(picks)) > 1  # the seed matters
  # The init's own stream: generator seeded by [seed, 0] (rounds use [seed, r, ...]).
  assert picks[3] == IDS[np.random.default_rng([3, 0]).integers(len(IDS))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_medoid_is_nearest_the_mean_direction(dtype, seed):
  """The case with the smallest cosine distance (scipy) to the mean unit embedding."""
  rng = np.random.default_rng(seed)
  # 20 short rows around one direction, 5 long ones (norm x100) around another: the mean
  # of raw rows points at the long ones, the mean of unit rows at the many short ones.
  a, b = rng.normal(size=(2, 12))
  emb = np.concatenate(
    [a + 0.3 * rng.normal(size=(20, 12)), 100 * (b + 0.3 * rng.normal(size=(5, 12)))]
  )
  emb = emb.astype(dtype)
  calls = []

  def embed0(ids):
    calls.append(list(ids))
    return emb

  unit = emb.astype(np.float64) / np.linalg.norm(emb.astype(np.float64), axis=1)[:, None]
  d = cdist(emb.astype(np.float64), unit.mean(0)[None], metric="cosine")[:, 0]
  assert np.sort(d)[1] - np.sort(d)[0] > 1e-6  # no near-tie in the reference
  assert pick_initial("medoid", IDS, seed, embed0) == IDS[int(np.argmin(d))]
  assert calls == [IDS]


def test_bad_rule_and_empty_pool():
  with pytest.raises(StrategyError, match="medoid"):
    pick_initial("centroid", IDS, 0, _no_embed)
  with pytest.raises(StrategyError, match="empty"):
    pick_initial("first", [], 0, _no_embed)
