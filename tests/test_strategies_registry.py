"""Every registered strategy on a tiny synthetic stats table; the input checks."""

import numpy as np
import pytest

from assft_jax import strategies
from assft_jax.scoring import assft, embed_kernels
from assft_jax.strategies import Pool, StrategyError, register

ALL = [
  "random",
  "rand",
  "fg_random",
  "fg_rand",
  "entropy",
  "least_confidence",
  "margin",
  "coreset",
  "badge",
  "sann",
  "ugtst",
  "cup",
  "dkd",
  "asd",
  "dkd_asd",
  "dkd_low",
  "asd_low",
  "asd_tau1",
  "asd_tau1_low",
  "assft",
]
DIVERSITY = ["coreset", "badge", "sann", "ugtst"]


def make_stats(n=30, f=16, g=8, seed=0):
  rng = np.random.default_rng(seed)
  ids = [f"case{i:03d}" for i in range(n)]
  stats = {"ids": ids}
  for k in ("entropy", "lc", "margin", "asd", "asd_tau1", "conf", "fg_frac", "ugtst", "usum"):
    stats[k] = rng.random(n).astype(np.float32)
  stats["emb_0"] = rng.normal(size=(n, f)).astype(np.float32)
  stats["emb_r"] = (stats["emb_0"] + 0.5 * rng.normal(size=(n, f))).astype(np.float32)
  stats["badge"] = rng.normal(size=(n, g)).astype(np.float32)
  return stats


def make_pool(ids, n_labeled=3, n_excluded=3):
  return Pool(
    labeled={i: 0 for i in ids[:n_labeled]},
    unlabeled=tuple(ids[n_labeled:]),
    excluded=tuple(ids[n_labeled : n_labeled + n_excluded]),
  )


def test_registry_has_every_name():
  assert sorted(ALL) == strategies.names()
  assert strategies.get("assft").fn is strategies.get("dkd_asd").fn
  assert strategies.get("rand").fn is strategies.get("random").fn
  assert strategies.get("fg_rand").fn is strategies.get("fg_random").fn


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("budget", [1, 5])
def test_budget_distinct_queryable_and_seeded(name, budget):
  stats = make_stats()
  pool = make_pool(stats["ids"])
  s = strategies.get(name)
  a = s.select(stats, pool, budget, np.random.default_rng(11), r=2, R=5).ids
  b = s.select(stats, pool, budget, np.random.default_rng(11), r=2, R=5).ids
  assert len(a) == budget == len(set(a))
  assert set(a) <= set(pool.queryable)
  assert a == b


def test_allow_all_returns_every_queryable_case():
  stats = make_stats()
  pool = make_pool(stats["ids"])
  got = strategies.get("entropy").select(stats, pool, 100, np.random.default_rng(0), allow_all=True)
  got = got.ids
  assert sorted(got) == sorted(pool.queryable)


def _clustered_stats(seed=0):
  """5 distinct directions, each present twice (near-duplicates, noise 1e-4); the
  labeled case sits on a 6th direction. Uncertainty scores make all 10 the candidates."""
  rng = np.random.default_rng(seed)
  base = np.linalg.qr(rng.normal(size=(16, 16)))[0][:6] * 3.0
  emb = np.concatenate([base[:1], np.repeat(base[1:], 2, axis=0)])
  emb = emb + 1e-4 * rng.normal(size=emb.shape)
  stats = make_stats(n=11, f=16, g=16, seed=seed)
  stats["emb_r"] = emb.astype(np.float32)
  stats["badge"] = emb.astype(np.float32) + 1.0 * base[0]  # distinct norms, same geometry
  cluster = {f"case{i:03d}": (i + 1) // 2 for i in range(11)}
  return stats, cluster


@pytest.mark.parametrize("name", DIVERSITY)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_diversity_strategies_avoid_near_duplicates(name, seed):
  stats, cluster = _clustered_stats(seed)
  pool = Pool(labeled={"case000": 0}, unlabeled=tuple(stats["ids"][1:]))
  got = strategies.get(name).select(stats, pool, 5, np.random.default_rng(seed)).ids
  assert len({cluster[i] for i in got}) == 5, got


def test_bad_budget_and_empty_pool():
  stats = make_stats()
  pool = make_pool(stats["ids"])
  s = strategies.get("entropy")
  for bad in (0, -1, 2.5, len(pool.queryable) + 1):
    with pytest.raises(StrategyError, match="budget"):
      s.select(stats, pool, bad, np.random.default_rng(0))
  empty = Pool(labeled={i: 0 for i in stats["ids"]}, unlabeled=())
  with pytest.raises(StrategyError, match="no queryable"):
    s.select(stats, empty, 1, np.random.default_rng(0))


def test_nan_names_the_case():
  stats = make_stats()
  stats["asd"][7] = np.nan
  pool = make_pool(stats["ids"])
  with pytest.raises(StrategyError, match="case007"):
    strategies.get("dkd_asd").select(stats, pool, 2, np.random.default_rng(0))
  stats["emb_r"][1, 3] = np.nan  # a labeled case: coreset uses it as a center
  with pytest.raises(StrategyError, match="case001"):
    strategies.get("coreset").select(stats, pool, 2, np.random.default_rng(0))


def test_unknown_name_lists_valid_ones_and_missing_key():
  with pytest.raises(StrategyError, match="coreset"):
    strategies.get("nope")
  stats = make_stats()
  del stats["ugtst"]
  with pytest.raises(StrategyError, match="ugtst"):
    strategies.get("ugtst").select(stats, make_pool(stats["ids"]), 2, np.random.default_rng(0))


def test_rankings_follow_the_design_table():
  stats = make_stats()
  pool = Pool(labeled={"case000": 0}, unlabeled=tuple(stats["ids"][1:]))
  rows = np.arange(1, 30)

  def ids(idx):
    return [stats["ids"][i] for i in idx]

  rng = np.random.default_rng(0)
  assert strategies.get("asd").select(stats, pool, 4, rng).ids == ids(
    rows[np.argsort(-stats["asd"][1:])[:4]]
  )
  assert strategies.get("asd_low").select(stats, pool, 4, rng).ids == ids(
    rows[np.argsort(stats["asd"][1:])[:4]]
  )
  assert strategies.get("asd_tau1").select(stats, pool, 4, rng).ids == ids(
    rows[np.argsort(-stats["asd_tau1"][1:])[:4]]
  )
  assert strategies.get("asd_tau1_low").select(stats, pool, 4, rng).ids == ids(
    rows[np.argsort(stats["asd_tau1"][1:])[:4]]
  )
  # CUP: top 2 N_B by usum, then top N_B of those by fg_frac.
  c = rows[np.argsort(-stats["usum"][1:])[:8]]
  assert strategies.get("cup").select(stats, pool, 4, rng).ids == ids(
    c[np.argsort(-stats["fg_frac"][c])[:4]]
  )
  # FG-RAND never picks a case under the foreground threshold while enough qualify.
  stats["fg_frac"][:] = 0.0
  stats["fg_frac"][[3, 9, 14, 20, 28]] = 0.2
  got = strategies.get("fg_random").select(stats, pool, 3, rng, fg_min_frac=0.1).ids
  assert set(got) <= set(ids([3, 9, 14, 20, 28]))


SCORE_NAMES = {"dkd_asd": {"dkd", "Q"}, "assft": {"dkd", "Q"}, "dkd": {"dkd"}, "dkd_low": {"dkd"}}


@pytest.mark.parametrize("name", ALL)
def test_selection_scores_cover_the_candidates(name):
  """Each strategy returns the scores it ranked by (beyond stats keys), for every
  queryable case as python floats; DKD and Q are exactly scoring.assft's over the
  candidates in pool order: embed_kernels' float32 DKD and scoring.assft's Q of it (the
  query record relies on this)."""
  stats = make_stats()
  pool = make_pool(stats["ids"])
  sel = strategies.get(name).select(stats, pool, 4, np.random.default_rng(3), r=1, R=5)
  assert set(sel.scores) == SCORE_NAMES.get(name, set())
  for values in sel.scores.values():
    assert list(values) == list(pool.queryable)
    assert all(type(v) is float for v in values.values())
  if sel.scores:
    rows = [stats["ids"].index(i) for i in pool.queryable]
    dkd = np.asarray(embed_kernels.dkd(stats["emb_0"][rows], stats["emb_r"][rows]))
    assert list(sel.scores["dkd"].values()) == dkd.tolist()
    if "Q" in sel.scores:
      q = assft.query_score(dkd, stats["asd"][rows])
      assert list(sel.scores["Q"].values()) == q.tolist()


def test_unknown_option_names_strategy_option_and_valid_ones():
  stats = make_stats()
  pool = make_pool(stats["ids"])
  with pytest.raises(StrategyError, match=r"'sann'.*san_pool.*sann_pool"):
    strategies.get("sann").select(stats, pool, 2, np.random.default_rng(0), san_pool=3)
  with pytest.raises(StrategyError, match=r"'rand'.*fg_min_frac"):  # another strategy's option
    strategies.get("rand").select(stats, pool, 2, np.random.default_rng(0), fg_min_frac=0.1)
  assert strategies.get("entropy").options == ()
  assert strategies.get("fg_random").options == ("fg_min_frac",)


@pytest.mark.parametrize(
  "name,option,first",
  [("sann", "sann_pool", "entropy"), ("ugtst", "ugtst_pool", "ugtst"), ("cup", "cup_pool", "usum")],
)
def test_pool_option_reaches_the_strategy(name, option, first):
  """With a pre-selection pool of 1·N_B, the cascade keeps exactly the top N_B of its
  first ranking: the declared option must reach the strategy's code."""
  stats = make_stats()
  pool = Pool(labeled={"case000": 0}, unlabeled=tuple(stats["ids"][1:]))
  got = strategies.get(name).select(stats, pool, 4, np.random.default_rng(0), **{option: 1})
  want = {stats["ids"][1 + i] for i in np.argsort(-stats[first][1:])[:4]}
  assert set(got.ids) == want
  default = strategies.get(name).select(stats, pool, 4, np.random.default_rng(0))
  assert set(default.ids) != want  # the test data tells the two pools apart


def test_register_checks_declared_options_against_the_function():
  def fn(table, budget, rng, *, width=2):
    return [0], {}

  with pytest.raises(ValueError, match="options"):
    register("test_options_mismatch", keys=(), options=("depth",))(fn)
  with pytest.raises(ValueError, match="options"):
    register("test_options_mismatch", keys=())(fn)
  assert "test_options_mismatch" not in strategies.names()
