"""Selective semi-supervised selection (§3.3) and the ASSFT query with its scores."""

import math

import numpy as np
import pytest
from scipy.stats import rankdata

from assft_jax import strategies
from assft_jax.pool import Pool
from assft_jax.strategies import StrategyError, n_su, select_reliable
from tests import _assft_reference as ref64


def _table(n=40, f=8, seed=0):
  rng = np.random.default_rng(seed)
  ids = [f"u{i:02d}" for i in range(n)]
  stats = {
    "ids": ids,
    "conf": rng.random(n),
    "emb_r": rng.normal(size=(n, f)),
    "emb_0": rng.normal(size=(n, f)),
    "asd": rng.random(n),
  }
  pool = Pool(labeled={i: 1 for i in ids[:4]}, unlabeled=tuple(ids[4:]), excluded=tuple(ids[4:7]))
  return stats, pool


def _reference(stats, pool, nsu, tau_c):
  """§3.3 written out in plain float64 numpy."""
  row = {i: k for k, i in enumerate(stats["ids"])}
  u = [row[i] for i in pool.unlabeled]
  a = stats["emb_r"][[row[i] for i in pool.labeled]]
  conf = stats["conf"][u]
  k = min(max(math.ceil(nsu * tau_c / conf.mean()), nsu), len(u))
  cand = np.argsort(-conf, kind="stable")[:k]
  e = stats["emb_r"][u][cand]
  cos = (e @ a.T) / np.outer(np.linalg.norm(e, axis=1), np.linalg.norm(a, axis=1))
  rel = conf[cand] * (1 - (1 - cos).min(1))
  best = cand[np.argsort(-rel, kind="stable")[:nsu]]
  return [pool.unlabeled[i] for i in best], k


@pytest.mark.parametrize("nsu,tau_c", [(3, 1.0), (6, 1.0), (4, 0.3), (36, 1.0)])
def test_select_reliable_matches_numpy(nsu, tau_c):
  stats, pool = _table()
  got = select_reliable(stats, pool, nsu, tau_c)
  assert got == _reference(stats, pool, nsu, tau_c)
  assert len(got[0]) == nsu == len(set(got[0])) and set(got[0]) <= set(pool.unlabeled)


def test_select_reliable_caps_and_errors():
  stats, pool = _table()
  ids, k = select_reliable(stats, pool, 1000, 1.0)
  assert len(ids) == len(pool.unlabeled) == k
  assert select_reliable(stats, pool, 0) == ([], 0)
  with pytest.raises(StrategyError, match="anchor"):
    select_reliable(stats, Pool(labeled={}, unlabeled=pool.unlabeled), 2)
  stats["conf"][10] = np.nan
  with pytest.raises(StrategyError, match="u10"):
    select_reliable(stats, pool, 2)


def test_n_su():
  assert n_su(2, 3, 100) == 6 and n_su(5, 4, 7) == 7 and n_su(3, 2, 0) == 0


def test_dkd_asd_scores_only_the_queryable_cases():
  """Q (Eq. 12-16) is fitted on the queryable cases; with distinct values it is
  rank(DKD)/(n-1) + rank(ASD)/(n-1), so the pick is checked against that."""
  stats, pool = _table()
  row = {i: k for k, i in enumerate(stats["ids"])}
  q = [row[i] for i in pool.queryable]
  e0, er = stats["emb_0"][q], stats["emb_r"][q]
  pakd = 1 - np.sum(e0 * er, 1) / (np.linalg.norm(e0, axis=1) * np.linalg.norm(er, axis=1))
  order = np.argsort(-pakd)
  un = er / np.linalg.norm(er, axis=1, keepdims=True)
  pd = np.ones(len(q))
  for c in range(1, len(q)):
    w = np.arange(c, 0, -1)  # weight k = c - j for the j-th earlier case
    pd[order[c]] = np.sum(w * (1 - un[order[:c]] @ un[order[c]])) / w.sum()
  dkd = pakd * pd
  # The float64 definition (scoring.assft) is this rewrite; the strategies use the
  # float32 device kernels, held to 1e-5 relative to it (test_scoring_embed_kernels).
  np.testing.assert_allclose(ref64.dkd(e0, er), dkd, rtol=1e-10)
  n = len(q)
  score = (rankdata(dkd) - 1) / (n - 1) + (rankdata(stats["asd"][q]) - 1) / (n - 1)
  want = [pool.queryable[i] for i in np.argsort(-score, kind="stable")[:5]]
  for name in ("dkd_asd", "assft"):
    sel = strategies.get(name).select(stats, pool, 5, np.random.default_rng(0))
    assert sel.ids == want
    assert set(sel.scores) == {"dkd", "Q"}
    np.testing.assert_allclose([sel.scores["dkd"][i] for i in pool.queryable], dkd, rtol=1e-5)
    np.testing.assert_allclose([sel.scores["Q"][i] for i in pool.queryable], score, atol=1e-12)
  for name, ranked in (("dkd", np.argsort(-dkd)), ("dkd_low", np.argsort(dkd))):
    sel = strategies.get(name).select(stats, pool, 3, np.random.default_rng(0))
    assert sel.ids == [pool.queryable[i] for i in ranked[:3]]
    assert set(sel.scores) == {"dkd"}
    np.testing.assert_allclose([sel.scores["dkd"][i] for i in pool.queryable], dkd, rtol=1e-5)
