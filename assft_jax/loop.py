"""Algorithm 1 (ASSFT) as plain code: one-shot init, then R rounds of
score → query → label → stage 1 → [select reliable → pseudo-label → stage 3] → evaluate.

Start-up order (one place, big_vision style): resume the last completed round of the
workdir, else start from `--pretrained`, else from the phantom source encoder
(pre-trained once and cached). Every round ends with its model, its pool, its query
slices and a DONE marker, then summary.json is rewritten atomically; a rerun of the
same command continues after the last DONE round and gives the same results.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from assft_jax import config as config_lib
from assft_jax import session as session_lib
from assft_jax import strategies
from assft_jax import workdir as wd_lib
from assft_jax.pool import Pool
from assft_jax.scoring import assft

log = logging.getLogger("assft_jax.loop")


def run(cfg: config_lib.RunConfig, overwrite: bool = False) -> dict:
  """Runs (or resumes) one experiment; returns the summary dict."""
  config_lib.validate(cfg)
  if cfg.al.mode == "al" and cfg.al.strategy not in strategies.names():
    raise config_lib.ConfigError(
      f"--strategy={cfg.al.strategy!r} is unknown; valid: {', '.join(strategies.names())}"
    )
  workdir = wd_lib.open_workdir(cfg, overwrite=overwrite)

  def check(split):
    if cfg.al.mode == "al":
      n_b = config_lib.budget_per_round(cfg.al.budget, len(split["pool"]))
      _check_budget(n_b, cfg.al.rounds, len(split["pool"]), cfg)

  sess = session_lib.Session.open(cfg, workdir, check)
  if cfg.al.mode == "lower_bound":
    return _bound_run(sess, train=False)
  if cfg.al.mode == "upper_bound":
    return _bound_run(sess, train=True)
  return _active_learning(sess)


# ----------------------------------------------------------------------------- AL


def _active_learning(sess: session_lib.Session) -> dict:
  cfg, wd = sess.cfg, sess.workdir
  R = cfg.al.rounds
  n_b = config_lib.budget_per_round(cfg.al.budget, len(sess.split["pool"]))
  summary = _load_summary(sess, n_b)
  done = wd_lib.last_done_round(wd)
  if done is None:
    pool, variables = _round_zero(sess, summary)
    done = 0
  else:
    pool = Pool.from_json(wd_lib.read_json(wd_lib.round_dir(wd, done) / "pool.json"))
    variables = sess.load_round_model(done)
    summary["rounds"] = [x for x in summary["rounds"] if x["round"] <= done]
    log.info("resuming %s after round %d", wd, done)
  for r in range(done + 1, R + 1):
    pool, variables = _round(sess, summary, pool, variables, r, n_b)
  summary["complete"] = True
  _write_summary(wd, summary)
  return summary


def _round_zero(sess, summary) -> tuple[Pool, Any]:
  """r = 0: the one-shot init on the case chosen by --init_pick."""
  cfg = sess.cfg
  pool = Pool(labeled={}, unlabeled=tuple(sess.split["pool"]), test=tuple(sess.split["test"]))
  rd = wd_lib.round_dir(sess.workdir, 0)
  query = wd_lib.read_json(rd / "query.json")
  if query is None:
    first = _init_pick(sess, pool)
    query = {"round": 0, "rule": f"init_pick={cfg.al.init_pick}", "queried": [first]}
    config_lib.write_json_atomic(rd / "query.json", query)
  labels = sess.label(query["queried"], 0)
  pool = pool.with_queried(query["queried"], 0)
  variables = sess.fit(sess.variables0, labels, {}, cfg.train.epochs_init, round_=0, stage="init")
  _finish_round(sess, summary, pool, variables, 0, query["queried"], [])
  return pool, variables


def _round(sess, summary, pool: Pool, variables, r: int, n_b: int) -> tuple[Pool, Any]:
  cfg = sess.cfg
  R = cfg.al.rounds
  rd = wd_lib.round_dir(sess.workdir, r)
  query = wd_lib.read_json(rd / "query.json")
  if query is None:  # a query already made (e.g. waiting for annotators) is never redrawn
    stats = sess.score(variables, list(pool.labeled) + list(pool.unlabeled), r, R)
    rng = np.random.default_rng([cfg.seed, r, 1])
    budget = min(n_b, len(pool.queryable))
    ids = strategies.get(cfg.al.strategy).select(stats, pool, budget, rng, r=r, R=R)
    query = {
      "round": r,
      "strategy": cfg.al.strategy,
      "queried": list(ids),
      "scores": _scores_of(stats, pool.queryable),
    }
    config_lib.write_json_atomic(rd / "query.json", query)
  queried = query["queried"]
  labels = {**sess.known_labels(pool), **sess.label(queried, r)}
  pool = pool.with_queried(queried, r)
  # Stage 1: supervised fine-tuning on T_l, continuing from the previous round's model.
  variables = sess.fit(variables, labels, {}, cfg.train.epochs_round, round_=r, stage="s1")
  pseudo_ids: list[str] = []
  if cfg.al.ssft and pool.unlabeled:
    # Stage 2: select N_SU reliable unlabeled cases; pseudo-label them with F^(r).
    stats = sess.score(variables, list(pool.labeled) + list(pool.unlabeled), r, R)
    n_su = strategies.n_su(n_b, r, len(pool.unlabeled))
    pseudo_ids, k = strategies.select_reliable(stats, pool, n_su, cfg.al.tau_c)
    pseudo = sess.predict(variables, pseudo_ids)
    config_lib.write_json_atomic(
      rd / "ssft.json", {"n_su": n_su, "K": int(k), "pseudo": list(pseudo_ids)}
    )
    # Stage 3: fine-tune on T_l ∪ pseudo.
    variables = sess.fit(variables, labels, pseudo, cfg.train.epochs_round, round_=r, stage="s3")
  pool = dataclasses.replace(
    pool, pseudo=tuple(pseudo_ids), excluded=tuple(strategies.next_excluded(pseudo_ids))
  )
  _finish_round(sess, summary, pool, variables, r, queried, pseudo_ids)
  return pool, variables


def _finish_round(sess, summary, pool: Pool, variables, r, queried, pseudo_ids) -> None:
  rd = wd_lib.round_dir(sess.workdir, r)
  result = sess.evaluate(variables)
  sess.save_round_model(r, variables)
  sess.save_query_slices(rd / "query_slices.npz", variables, queried)
  config_lib.write_json_atomic(rd / "pool.json", pool.to_json())
  wd_lib.mark_done(sess.workdir, r)
  summary["rounds"] = [x for x in summary["rounds"] if x["round"] != r]
  summary["rounds"].append(
    {
      "round": r,
      "n_labeled": len(pool.labeled),
      "queried": list(queried),
      "pseudo": list(pseudo_ids),
      **result,
    }
  )
  summary["budget_label"] = _budget_labels(sess.cfg, len(summary["rounds"]))
  _write_summary(sess.workdir, summary)
  log.info(
    "round %d: %d labeled, Dice %.4f ± %.4f",
    r,
    len(pool.labeled),
    result["dice_mean"] if result["dice_mean"] is not None else float("nan"),
    result["dice_sd"] if result["dice_sd"] is not None else float("nan"),
  )


# ------------------------------------------------------------------------- bounds


def _bound_run(sess, train: bool) -> dict:
  """Lower bound: no target fine-tuning. Upper bound: fine-tune on the whole target pool
  for the same number of epochs as the whole AL run (init + R rounds)."""
  cfg, wd = sess.cfg, sess.workdir
  summary = _load_summary(sess, None)
  if wd_lib.last_done_round(wd) == 0:
    return summary
  ids = list(sess.split["pool"])
  variables = sess.variables0
  if train:
    labels = sess.label(ids, 0)
    epochs = cfg.train.epochs_init + cfg.al.rounds * cfg.train.epochs_round
    variables = sess.fit(variables, labels, {}, epochs, round_=0, stage="upper")
  result = sess.evaluate(variables)
  sess.save_round_model(0, variables)
  wd_lib.mark_done(wd, 0)
  key = "upper_bound" if train else "lower_bound"
  summary[key] = result["dice_mean"]
  summary["rounds"] = [
    {"round": 0, "n_labeled": len(ids) if train else 0, "queried": [], "pseudo": [], **result}
  ]
  summary["complete"] = True
  _write_summary(wd, summary)
  return summary


# ------------------------------------------------------------------------ helpers


def _init_pick(sess, pool: Pool) -> str:
  ids = list(pool.unlabeled)
  rule = sess.cfg.al.init_pick
  if rule == "first":
    return ids[0]
  if rule == "random":
    return ids[int(np.random.default_rng([sess.cfg.seed, 0]).integers(len(ids)))]
  emb0 = sess.embed0(ids)  # medoid: the case nearest the mean E0 embedding (DESIGN §2)
  e = emb0 / np.maximum(np.linalg.norm(emb0, axis=1, keepdims=True), 1e-12)
  m = e.mean(axis=0)
  return ids[int(np.argmax(e @ m))]


def _check_budget(n_b: int, R: int, pool_size: int, cfg) -> None:
  need = 1 + n_b * R
  if need > pool_size:
    raise config_lib.ConfigError(
      f"--budget={cfg.al.budget} × --rounds={R} (+1 initial case) asks for {need} cases, "
      f"but the target pool holds {pool_size} (after the {cfg.data.test_fraction:.0%} test "
      "split). Lower --budget or --rounds."
    )


def _scores_of(stats: Mapping[str, Any], ids) -> dict:
  """Every queryable case's scalar scores, kept with the query: the per-case stats, and
  DKD and Q (Eq. 5, 16) over the same candidates as the ASSFT query ranks them."""
  ids = list(ids)
  row = {c: i for i, c in enumerate(stats["ids"])}
  index = [row[c] for c in ids]
  out = {}
  for key, v in stats.items():
    arr = np.asarray(v) if key != "ids" else None
    if arr is not None and arr.ndim == 1 and arr.shape[0] == len(stats["ids"]):
      out[key] = dict(zip(ids, arr[index].astype(float).tolist()))
  if "emb_0" in stats and len(ids) > 0:
    dkd = assft.dkd(np.asarray(stats["emb_0"])[index], np.asarray(stats["emb_r"])[index])
    out["dkd"] = dict(zip(ids, dkd.astype(float).tolist()))
    q = assft.query_score(dkd, np.asarray(stats["asd"])[index])
    out["Q"] = dict(zip(ids, q.astype(float).tolist()))
  return out


def _budget_labels(cfg, n_rounds: int) -> list[str]:
  b = str(cfg.al.budget).strip()
  if b.endswith("%"):
    pct = float(b[:-1])
    return ["init"] + [f"{pct * r:g}%" for r in range(1, n_rounds)]
  return ["1-shot"] + [f"{1 + int(b) * r}-shot" for r in range(1, n_rounds)]


def _load_summary(sess, n_b) -> dict:
  s = wd_lib.read_json(sess.workdir / "summary.json")
  if s is None:
    s = {
      "strategy": sess.cfg.strategy_name,
      "ssft": bool(sess.cfg.al.ssft),
      "seed": sess.cfg.seed,
      "complete": False,
      "budget_per_round": n_b,
      "lower_bound": None,
      "upper_bound": None,
      "class_names": list(sess.class_names[1:]),
      "rounds": [],
    }
  return s


def _write_summary(workdir: Path, summary: dict) -> None:
  summary["rounds"].sort(key=lambda x: x["round"])
  config_lib.write_json_atomic(Path(workdir) / "summary.json", summary)
