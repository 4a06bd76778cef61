"""Cross-checks against scikit-activeml 1.0.x on the same probabilities / embeddings.

Each case here is a single voxel, so our per-case mean utilities equal skactiveml's
per-sample utilities, and our selection must equal skactiveml's query.
"""

import numpy as np
import pytest
import skactiveml.base as skbase  # a declared test dependency: missing it fails
import skactiveml.pool as skpool

from assft_jax import strategies
from assft_jax.pool import Pool
from assft_jax.scoring import kernels
from assft_jax.strategies.diversity import kmeanspp_seeding

N, C, F, BUDGET = 40, 4, 6, 6
LABELED = [0, 5, 17]


class LookupClassifier(skbase.SkactivemlClassifier):
  """Returns fixed class probabilities (and embeddings) for X = [[row index]]."""

  def __init__(self, probas=None, emb=None, classes=None, missing_label=np.nan):
    super().__init__(classes=classes, missing_label=missing_label)
    self.probas, self.emb = probas, emb

  def fit(self, X, y, sample_weight=None):
    self.classes_ = np.arange(self.probas.shape[1])
    return self

  def predict_proba(self, X, return_embeddings=False):
    rows = np.asarray(X)[:, 0].astype(int)
    p = self.probas[rows]
    return (p, self.emb[rows]) if return_embeddings else p


def _data(seed):
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(N, C)) * 2
  p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
  y = np.full(N, np.nan)
  y[LABELED] = p[LABELED].argmax(1)
  ids = [f"c{i:02d}" for i in range(N)]
  pool = Pool(
    labeled={ids[i]: 0 for i in LABELED},
    unlabeled=tuple(ids[i] for i in range(N) if i not in LABELED),
  )
  return rng, p.astype(np.float32), y, ids, pool


@pytest.mark.parametrize(
  "ours,theirs",
  [("entropy", "entropy"), ("least_confidence", "least_confident"), ("margin", "margin_sampling")],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_uncertainty_sampling_selects_same_cases(ours, theirs, seed):
  rng, p, y, ids, pool = _data(seed)
  stats = {
    k: np.asarray(v) for k, v in kernels.reduce_case_stats(p.reshape(N, 1, 1, 1, C), 1, 5).items()
  }
  stats["ids"] = ids
  got = strategies.get(ours).select(stats, pool, BUDGET, rng).ids
  clf = LookupClassifier(probas=p.astype(np.float64)).fit(None, None)
  q = skpool.UncertaintySampling(method=theirs, random_state=0).query(
    np.arange(N, dtype=float)[:, None], y, clf, fit_clf=False, batch_size=BUDGET
  )
  assert got == [ids[i] for i in q]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coreset_selects_same_cases(seed):
  rng, _, y, ids, pool = _data(seed)
  emb = rng.normal(size=(N, F))
  stats = {"ids": ids, "emb_r": emb}
  got = strategies.get("coreset").select(stats, pool, BUDGET, rng).ids
  q = skpool.CoreSet(metric="euclidean", random_state=0).query(emb, y, batch_size=BUDGET)
  assert got == [ids[i] for i in q]


def test_coreset_respects_exclusion_like_skactiveml_candidates():
  rng, _, y, ids, pool = _data(3)
  emb = rng.normal(size=(N, F))
  excluded = tuple(ids[i] for i in (1, 2, 3, 30))
  pool = Pool(labeled=pool.labeled, unlabeled=pool.unlabeled, excluded=excluded)
  cand = np.array([ids.index(i) for i in pool.queryable])
  got = strategies.get("coreset").select({"ids": ids, "emb_r": emb}, pool, BUDGET, rng).ids
  q = skpool.CoreSet(random_state=0).query(emb, y, candidates=cand, batch_size=BUDGET)
  assert got == [ids[i] for i in q]


@pytest.mark.parametrize("seed", [0, 1])
def test_badge_first_pick_and_d2_distributions_match(seed):
  """What is compared: BADGE's deterministic parts. (1) Our kernels.badge_embedding is
  skactiveml's gradient embedding up to sign (same norms and distances). (2) The first
  pick (largest norm) is the same case. (3) At every later step, conditioned on
  skactiveml's own earlier picks, our D^2 sampling distribution matches its utilities
  (rtol 1e-5) except for one documented difference: skactiveml's running minimum
  starts from ||g||^2, i.e. it also counts the origin as a center, which the original
  BADGE (Ash et al.) and this implementation do not; the test checks both against plain numpy D^2.
  The random draws come from different generators (np.random.Generator vs RandomState)
  and are not compared."""
  rng, p, y, ids, pool = _data(seed)
  h = rng.normal(size=(N, F)).astype(np.float32)
  ours = np.asarray(
    kernels.badge_embedding(p.reshape(N, 1, 1, 1, C), h.reshape(N, 1, 1, 1, F)), np.float64
  )
  clf = LookupClassifier(probas=p.astype(np.float64), emb=h.astype(np.float64)).fit(None, None)
  q, util = skpool.Badge(clf_embedding_flag_name="return_embeddings", random_state=seed).query(
    np.arange(N, dtype=float)[:, None],
    y,
    clf,
    fit_clf=False,
    batch_size=BUDGET,
    return_utilities=True,
  )
  onehot = np.eye(C)[p.argmax(1)]
  theirs_g = ((p - onehot)[:, :, None] * h[:, None, :]).reshape(N, -1)
  np.testing.assert_allclose(ours, -theirs_g, rtol=1e-5, atol=1e-7)

  unl = np.array([i for i in range(N) if i not in LABELED])
  pos = {int(i): k for k, i in enumerate(unl)}
  replay, seen = iter([pos[int(i)] for i in q[1:]]), []

  def draw(prob):
    seen.append(prob)
    return next(replay)

  g = ours[unl]
  picks = kmeanspp_seeding(g, BUDGET, draw)
  assert [int(unl[i]) for i in picks] == [int(i) for i in q]
  sq = lambda v: np.sum(v**2, axis=-1)
  for step, prob in enumerate(seen, start=1):
    d2 = np.min([sq(g - g[j]) for j in picks[:step]], axis=0)  # plain numpy D^2
    np.testing.assert_allclose(prob, d2 / d2.sum(), rtol=1e-5, atol=1e-12)
    # skactiveml keeps its step-0 D^2 = ||g||^2 inside the running minimum, so the
    # origin acts as one more center; with that term its utilities are the same D^2.
    d2_sk = np.minimum(d2, sq(g))
    np.testing.assert_allclose(
      np.nan_to_num(util[step][unl]), d2_sk / d2_sk.sum(), rtol=1e-5, atol=1e-12
    )

  stats = {"ids": ids, "badge": ours}
  got = strategies.get("badge").select(stats, pool, BUDGET, np.random.default_rng(0)).ids
  assert got[0] == ids[q[0]]
