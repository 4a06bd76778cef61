"""Algorithm 1 (ASSFT) as plain code: one-shot init, then R rounds of
score → query → label → stage 1 → [select reliable → pseudo-label → stage 3] → evaluate.

Start-up order (one place, big_vision style): take the workdir's lock (`lock.locked`),
read the last completed round back whole (a damaged file stops the run here, naming it)
and resume from it, else copy round 0 from the cache when another arm of this seed has trained it
(`workdir.round0_key`), else start from `--pretrained`, else from the phantom source
encoder (pre-trained once and cached). Every round ends with its model, its pool, its
query slices, its summary row and a DONE marker, then summary.json is rewritten
atomically; a rerun of the same command continues after the last DONE round and gives
the same results.

Stage 3 (`--stage3`): with --ssft it fine-tunes on T_l ∪ pseudo-labels; the
compute-matched control (`--nossft --stage3=supervised`) runs the same stage on T_l
alone, so a query strategy gets ASSFT's optimiser steps without its pseudo-labels.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from assft_jax import atomic, components, lock, plan, strategies
from assft_jax import config as config_lib
from assft_jax import session as session_lib
from assft_jax import workdir as wd_lib
from assft_jax.data import preprocess
from assft_jax.engine.score import fingerprint
from assft_jax.engine.train import TrainingDiverged
from assft_jax.pool import Pool

log = logging.getLogger("assft_jax.loop")


def run(
  cfg: config_lib.RunConfig,
  overwrite: bool = False,
  resume_from: int | None = None,
  allow_kernel_switch: bool = False,
  batcher: Any = None,
) -> dict:
  """Runs (or resumes) one experiment; returns the summary dict.

  resume_from: continue after this complete round; the later ones are moved aside
  (`workdir.discard_after`). allow_kernel_switch: resume rounds made with another conv
  kernel (refused otherwise). batcher: the group's, when this run's training stages run
  with other runs' in one program (`assft_jax.group`). A full disk anywhere is one
  DiskFullError naming the file.
  """
  config_lib.validate(cfg)
  cfg = components.resolve(cfg)
  log.info("conv kernel: %s (%s)", cfg.model.conv_impl, components.kernel(cfg)[1])
  if cfg.al.mode == "al" and cfg.al.strategy not in strategies.names():
    raise config_lib.ConfigError(
      f"--strategy={cfg.al.strategy!r} is unknown; valid: {', '.join(strategies.names())}"
    )
  with lock.locked(cfg.workdir) as wd, atomic.disk_full_names(fallback=wd):
    workdir = wd_lib.open_workdir(
      cfg, overwrite=overwrite, resume_from=resume_from, allow_kernel_switch=allow_kernel_switch
    )
    # The last complete round read back now: a damaged file shows before any slow work.
    last = wd_lib.resume_state(workdir) if cfg.al.mode == "al" else None
    data = components.open_data(cfg, workdir)
    if cfg.al.mode == "al":  # before the model, which may pre-train the source encoder
      log.info("plan: %s", plan.describe(cfg, len(data.split["pool"])))
    sess = session_lib.Session.open(cfg, workdir, data, batcher)
    try:
      if cfg.al.mode == "al":
        return _active_learning(sess, last)
      return _bound_run(sess, train=cfg.al.mode == "upper_bound")
    except TrainingDiverged as e:
      e.args = (f"{e}. {_after_divergence(cfg, e.round)}",)
      raise


def _after_divergence(cfg: config_lib.RunConfig, r: int | None) -> str:
  """What a user can do after a NaN stop (the rounds before it are complete and kept; the
  diverged stage's last good state is in round_XXX/diverged_<stage>/ for a look)."""
  cures = "a lower --lr (or a --clip_norm)"
  if cfg.al.mode != "al" or not r:
    return f"No round is complete: rerun with {cures} and --overwrite."
  return (
    f"Rounds 0..{r - 1} are complete and kept: rerun the same command to retry round {r}, "
    f"or continue with {cures} by adding --resume_from={r - 1}."
  )


# ----------------------------------------------------------------------------- AL


def _active_learning(sess: session_lib.Session, last: wd_lib.RoundState | None) -> dict:
  cfg, wd = sess.cfg, sess.workdir
  n_b = config_lib.budget_per_round(cfg.al.budget, len(sess.data.split["pool"]))
  summary = _load_summary(sess, n_b)
  entry = _round0_entry(sess) if last is None else None
  if entry is not None and wd_lib.restore_round0(entry, wd, sess.data.split):
    log.info("round 0 copied from %s (trained by another run with the same round 0)", entry)
    last = wd_lib.resume_state(wd)
  if last is None:
    pool, variables = _round_zero(sess, summary, entry)
    done = 0
  else:
    done, pool, variables = last.round, last.pool, last.variables
    # The rows of done rounds come from their row.json: a kill between a round's DONE and
    # the summary write (or a copied round 0) leaves summary.json behind the workdir.
    summary["rounds"] = list(last.rows)
    _write_summary(sess, summary)
    log.info("resuming %s after round %d", wd, done)
  for r in range(done + 1, cfg.al.rounds + 1):
    pool, variables = _round(sess, summary, pool, variables, r, n_b)
  summary["complete"] = True
  _write_summary(sess, summary)
  return summary


def _round0_entry(sess: session_lib.Session) -> Path | None:
  """The cache entry of this run's round 0; None under --oracle=manifest (an annotator's
  labels belong to the run, and its round 0 may wait for them)."""
  cfg = sess.cfg
  if cfg.al.oracle != "ground_truth":
    return None
  # The weights of F(0) and the input files: what the config names but does not hold (a
  # re-converted --pretrained, an edited data file under the same path).
  ds, pcfg = sess.data.dataset, components.preprocess_config(cfg)
  data = [preprocess.cache_key(c, pcfg, ds.label_lut, ds.mask_names) for c in ds.cases]
  key = wd_lib.round0_key(cfg, fingerprint(sess.variables0), *data)
  return cfg.cache / "round0" / key


def _round_zero(sess: session_lib.Session, summary: dict, entry: Path | None) -> tuple[Pool, Any]:
  """r = 0: the one-shot init on the case chosen by --init_pick; then stored in the cache
  `entry` for the other arms of the seed."""
  cfg = sess.cfg
  pool = Pool.initial(sess.data.split)
  path = wd_lib.round_dir(sess.workdir, 0) / "query.json"
  query = wd_lib.read_json(path)
  if query is None:
    first = strategies.pick_initial(cfg.al.init_pick, pool.unlabeled, cfg.seed, sess.embed0)
    query = {"round": 0, "rule": f"init_pick={cfg.al.init_pick}", "queried": [first]}
    atomic.write_json(path, query)
  labels = sess.oracle.label(query["queried"], 0)
  pool = pool.with_queried(query["queried"], 0)
  variables = sess.fit(sess.variables0, labels, {}, cfg.train.epochs_init, round_=0, stage="init")
  _finish_round(sess, summary, pool, variables, 0, query["queried"])
  if entry is not None and wd_lib.store_round0(sess.workdir, entry):
    log.info("round 0 stored in %s for the other runs of this seed", entry)
  return pool, variables


def _round(sess: session_lib.Session, summary: dict, pool: Pool, variables, r: int, n_b: int):
  cfg, R = sess.cfg, sess.cfg.al.rounds
  rd = wd_lib.round_dir(sess.workdir, r)
  query = wd_lib.read_json(rd / "query.json")
  if query is None:  # a query already made (e.g. waiting for annotators) is never redrawn
    # F(r-1)'s pass over the pool, made when round r-1 ended (scored again only for a
    # round made before rounds kept it).
    stats = wd_lib.read_scores(wd_lib.round_dir(sess.workdir, r - 1) / wd_lib.SCORES)
    if stats is None:
      stats = sess.score(variables, pool.labeled_ids + pool.unlabeled, r, R)
    rng = np.random.default_rng([cfg.seed, r, 1])
    # §3.4 bars last round's pseudo-labelled cases; when that would leave fewer than N_B
    # to query, the bar is lifted for this round (plan.py says why).
    lifted = len(pool.queryable) < n_b and bool(pool.excluded)
    if lifted:
      log.warning(
        "round %d: %d of %d unlabeled cases are queryable after §3.4's exclusion, fewer "
        "than N_B = %d: the exclusion is lifted for this query",
        r,
        len(pool.queryable),
        len(pool.unlabeled),
        n_b,
      )
    candidates = pool.without_exclusion() if lifted else pool
    budget = min(n_b, len(candidates.queryable))
    sel = strategies.get(cfg.al.strategy).select(stats, candidates, budget, rng, r=r, R=R)
    query = {
      "round": r,
      "strategy": cfg.al.strategy,
      "queried": list(sel.ids),
      "exclusion_lifted": lifted,
      "scores": {**_case_stats(stats, candidates.queryable), **sel.scores},
    }
    atomic.write_json(rd / "query.json", query)
  queried = query["queried"]
  # The query first: a round still waiting for annotators stops before re-reading the
  # earlier labels. Earlier cases stay first in the dict (it is the training order).
  new = sess.oracle.label(queried, r)
  labels = {**sess.oracle.known(pool.labeled_ids), **new}
  pool = pool.with_queried(queried, r)
  # Stage 1: supervised fine-tuning on T_l, continuing from the previous round's model.
  variables = sess.fit(variables, labels, {}, cfg.train.epochs_round, round_=r, stage="s1")
  pseudo_ids: list[str] = []
  extra = {}
  if cfg.al.ssft and pool.unlabeled:
    # Stage 2: select N_SU reliable unlabeled cases; pseudo-label them with F^(r).
    stats = sess.score(variables, pool.labeled_ids + pool.unlabeled, r, R)
    n_su = strategies.n_su(n_b, r, len(pool.unlabeled))
    pseudo_ids, k = strategies.select_reliable(stats, pool, n_su, cfg.al.tau_c)
    # Table 8: how good F^(r) is on every unlabeled case, selected or not; never trained on.
    extra = _unlabeled_dice(stats, pool.unlabeled)
    pseudo = sess.predict(variables, pseudo_ids)
    ssft = {"n_su": n_su, "K": int(k), "pseudo": list(pseudo_ids), **extra}
    atomic.write_json(rd / "ssft.json", ssft)
    # Stage 3: fine-tune on T_l ∪ pseudo.
    variables = sess.fit(variables, labels, pseudo, cfg.train.epochs_round, round_=r, stage="s3")
  elif cfg.al.stage3 == "supervised" and pool.unlabeled:
    # The compute-matched control: SSFT's stage 3 (same length, same seed stream, run when
    # SSFT's would run) on T_l alone.
    variables = sess.fit(variables, labels, {}, cfg.train.epochs_round, round_=r, stage="s3")
  pool = pool.with_pseudo(pseudo_ids)
  if query.get("exclusion_lifted"):
    extra["exclusion_lifted"] = True
  _finish_round(sess, summary, pool, variables, r, queried, extra)
  return pool, variables


def _pool_pass(sess: session_lib.Session, pool: Pool, variables, r: int, rd: Path) -> dict:
  """F(r)'s scoring pass over the whole target pool (labeled and unlabeled cases), saved in
  round_XXX/scores.npz: the next round's query ranks these stats (the pass it would make
  itself), and their Dice against the ground truth gives the pool protocols of the report
  (the unlabeled cases, and every pool case). The last round makes it for the protocols
  only. Returns {id: Dice or None} (None: no ground truth, or no class to score)."""
  R = sess.cfg.al.rounds
  stats = sess.score(variables, pool.labeled_ids + pool.unlabeled, min(r + 1, R), R)
  wd_lib.write_scores(rd / wd_lib.SCORES, stats)
  return {c: _num(float(d)) for c, d in zip(stats["ids"], stats["dice_gt"])}


def _finish_round(
  sess: session_lib.Session,
  summary: dict,
  pool: Pool,
  variables,
  r: int,
  queried: list[str],
  extra: Mapping[str, Any] | None = None,
) -> None:
  """Persists the round (model, query slices, pool, its summary row, DONE), then
  summary.json; `extra` goes into the row."""
  wd, rd = sess.workdir, wd_lib.round_dir(sess.workdir, r)
  result = _result_row(sess.evaluate(variables))
  pool_dice = _pool_pass(sess, pool, variables, r, rd)
  wd_lib.save_model(wd, r, sess.module, variables)
  preds = sess.predict(variables, queried) if queried else {}
  wd_lib.write_query_slices(rd / "query_slices.npz", sess.volumes, preds, queried)
  atomic.write_json(rd / "pool.json", pool.to_json())
  row = {
    "round": r,
    "n_labeled": len(pool.labeled),
    "queried": list(queried),
    "pseudo": list(pool.pseudo),
    "conv_impl": sess.cfg.model.conv_impl,
    **result,
    "pool_dice_per_case": pool_dice,
    **(extra or {}),
  }
  atomic.write_json(rd / "row.json", row)
  wd_lib.mark_done(wd, r)
  summary["rounds"] = [x for x in summary["rounds"] if x["round"] != r] + [row]
  summary["budget_label"] = _budget_labels(sess.cfg, len(summary["rounds"]))
  _write_summary(sess, summary)
  log.info(
    "round %d: %d labeled, Dice %.4f ± %.4f",
    r,
    len(pool.labeled),
    _or_nan(result["dice_mean"]),
    _or_nan(result["dice_sd"]),
  )


# ------------------------------------------------------------------------- bounds


def _bound_run(sess: session_lib.Session, train: bool) -> dict:
  """Lower bound: no target fine-tuning. Upper bound: fine-tune on the whole target pool
  for the same number of epochs as the whole AL run (init + R rounds)."""
  cfg, wd = sess.cfg, sess.workdir
  summary = _load_summary(sess, None)
  if wd_lib.last_done_round(wd) == 0:
    return summary
  ids = list(sess.data.split["pool"])
  variables = sess.variables0
  if train:
    labels = sess.oracle.label(ids, 0)
    epochs = cfg.train.epochs_init + cfg.al.rounds * cfg.train.epochs_round
    variables = sess.fit(variables, labels, {}, epochs, round_=0, stage="upper")
  result = _result_row(sess.evaluate(variables))
  # The bounds on the pool protocols: F(0) (lower) or the network trained on every pool
  # case (upper) scored on the whole pool; nothing is queried after, so nothing is kept.
  ids_scored = list(sess.data.split["pool"])
  stats = sess.score(variables, ids_scored, 1, max(cfg.al.rounds, 1))
  pool_dice = {c: _num(float(d)) for c, d in zip(stats["ids"], stats["dice_gt"])}
  wd_lib.save_model(wd, 0, sess.module, variables)
  wd_lib.mark_done(wd, 0)
  summary[cfg.al.mode] = result["dice_mean"]
  summary["rounds"] = [
    {
      "round": 0,
      "n_labeled": len(ids) if train else 0,
      "queried": [],
      "pseudo": [],
      "conv_impl": cfg.model.conv_impl,
      **result,
      "pool_dice_per_case": pool_dice,
    }
  ]
  summary["complete"] = True
  _write_summary(sess, summary)
  return summary


# ------------------------------------------------------------------------ helpers


def _case_stats(stats: Mapping[str, Any], ids: Sequence[str]) -> dict[str, dict[str, float]]:
  """The scalar per-case stats of the candidates, kept with the query that used them."""
  row = {c: i for i, c in enumerate(stats["ids"])}
  index = [row[c] for c in ids]
  out = {}
  for key, v in stats.items():
    if key == "ids":
      continue
    arr = np.asarray(v)
    if arr.ndim == 1 and arr.shape[0] == len(stats["ids"]):
      out[key] = dict(zip(ids, arr[index].astype(float).tolist()))
  return out


def _result_row(res: Mapping[str, Any]) -> dict:
  """engine.evaluate's result as the summary's row fields (NaN -> null in JSON): for each
  of dice, hd95 (mm) and nsd, <metric>_mean, _sd (over the test cases' means over their
  classes), _per_case and _per_class; hd95_one_sided, the case-class pairs HD95 leaves out
  (the class in only one of prediction and label: Dice and NSD 0 there), and
  nsd_tolerance_mm. With no labeled test case (e.g. an unlabeled dataset under
  --oracle=manifest) every metric field is empty."""
  hd95, nsd = res["hd95"], res["nsd"]
  return {
    **_metric_fields("dice", res),
    **_metric_fields("hd95", hd95),
    "hd95_one_sided": hd95["n_one_sided"],
    **_metric_fields("nsd", nsd),
    "nsd_tolerance_mm": nsd["tolerance_mm"],
  }


def _metric_fields(name: str, res: Mapping[str, Any]) -> dict:
  """One metric's `engine.evaluate.summarize` dict as the row's <name>_* fields."""
  scored = res["n_cases"] > 0
  return {
    f"{name}_mean": _num(res["mean"]) if scored else None,
    f"{name}_sd": _num(res["sd"]) if scored else None,
    f"{name}_per_case": {c: v["mean"] for c, v in res["per_case"].items()} if scored else {},
    f"{name}_per_class": res["per_class"] if scored else {},
  }


def _unlabeled_dice(stats: Mapping[str, Any], unlabeled: Sequence[str]) -> dict:
  """{"unlabeled_dice": {id: Dice of F^(r)}} over the unlabeled cases that have ground
  truth (stats["dice_gt"] is NaN for the others); {} when none has."""
  row = {c: i for i, c in enumerate(stats["ids"])}
  dice = np.asarray(stats["dice_gt"], np.float64)
  got = {c: float(dice[row[c]]) for c in unlabeled if np.isfinite(dice[row[c]])}
  return {"unlabeled_dice": got} if got else {}


def _num(v) -> float | None:
  return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _or_nan(v: float | None) -> float:
  return math.nan if v is None else v


def _budget_labels(cfg, n_rounds: int) -> list[str]:
  b = str(cfg.al.budget).strip()
  if b.endswith("%"):
    pct = float(b[:-1])
    return ["init"] + [f"{pct * r:g}%" for r in range(1, n_rounds)]
  return ["1-shot"] + [f"{1 + int(b) * r}-shot" for r in range(1, n_rounds)]


def _load_summary(sess: session_lib.Session, n_b: int | None) -> dict:
  s = wd_lib.read_json(sess.workdir / "summary.json")
  sess.carry_timing(s.get("timing") if s else None)
  if s is None:
    s = {
      "strategy": sess.cfg.strategy_name,
      "ssft": bool(sess.cfg.al.ssft),
      "stage3": _stage3(sess.cfg),
      "seed": sess.cfg.seed,
      "complete": False,
      "budget": str(sess.cfg.al.budget).strip(),
      "budget_per_round": n_b,
      "lower_bound": None,
      "upper_bound": None,
      "class_names": list(sess.class_names[1:]),
      "rounds": [],
    }
  # One entry per distinct setting a process of this run ran with (a resume on another
  # commit or jax adds one); each round's row names its conv kernel.
  batcher = sess.trainer.batcher
  made = components.provenance(sess.cfg, "alone" if batcher is None else batcher.batched)
  if not s.get("made_with") or s["made_with"][-1] != made:
    s["made_with"] = [*s.get("made_with", []), made]
  return s


def _stage3(cfg: config_lib.RunConfig) -> str:
  """What stage 3 of each round does: "pseudo" (SSFT), "supervised" (the control), "none"."""
  if cfg.al.mode != "al":
    return "none"
  if cfg.al.ssft:
    return "pseudo"
  return "supervised" if cfg.al.stage3 == "supervised" else "none"


def _write_summary(sess: session_lib.Session, summary: dict) -> None:
  """summary.json, atomically, with the run's wall-time split (`Session.timing`, which
  carries the seconds of this run's earlier processes)."""
  summary["timing"] = {k: round(v, 3) for k, v in sess.timing.items()}
  summary["rounds"].sort(key=lambda x: x["round"])
  atomic.write_json(Path(sess.workdir) / "summary.json", summary)
