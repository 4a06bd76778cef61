"""What one run holds while it goes: data, split, oracle, model, mesh and compiled steps.

`loop.py` speaks to a Session (fit, score, embed0, predict, evaluate) and to its oracle,
so Algorithm 1 reads as the paper writes it; this file is the glue onto the rooms
(data, models, engine) and the place where their settings meet the RunConfig.

Opening is two steps, so that the errors a user can cause show before any slow work:
`open_data` (index, preprocess, split: bad files and flags show here), then the loop's
own checks (the budget against the pool), then `Session.open` (the model, which may
pre-train the phantom source encoder).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from assft_jax import atomic, engine, models, pretrain
from assft_jax import config as config_lib
from assft_jax import data as data_lib
from assft_jax import oracle as oracle_lib
from assft_jax import workdir as wd_lib
from assft_jax.data.classes import parse_label_map
from assft_jax.engine import predict as engine_predict
from assft_jax.pool import draw_split

log = logging.getLogger("assft_jax.session")

# Stage -> the seed stream of its loader and augmentation (fixed: resume reproduces it).
_STAGES = {"init": 0, "s1": 1, "s3": 3, "upper": 4}


@dataclasses.dataclass(frozen=True)
class RunData:
  """The target data of a run: the index, the preprocessed volumes and the test split."""

  dataset: data_lib.Dataset
  volumes: Mapping[str, data_lib.Volume]
  split: Mapping[str, list[str]]  # {"test": ids, "pool": ids}


def open_data(cfg: config_lib.RunConfig, workdir: Path) -> RunData:
  """Index and preprocess the dataset (cached), and draw or reload the test split."""
  dataset = load_dataset(cfg)
  volumes = data_lib.prepare(dataset, preprocess_config(cfg), cfg.cache / "preprocessed")
  path = Path(workdir) / "split.json"
  split = wd_lib.read_json(path)
  if split is None:  # stored once: a resume cannot redraw it
    split = draw_split(
      [c.id for c in dataset.cases],
      [c.id for c in dataset.cases if c.label is not None],
      cfg.data.test_fraction,
      cfg.seed,
      _strata(cfg, dataset),
    )
    atomic.write_json(path, split)
  return RunData(dataset, volumes, split)


@dataclasses.dataclass
class Session:
  cfg: config_lib.RunConfig
  workdir: Path
  data: RunData
  oracle: oracle_lib.Oracle
  module: Any
  variables0: Any  # F(0): the pre-trained encoder with a fresh decoder
  mesh: Any
  _steps: dict = dataclasses.field(default_factory=dict)
  _clock: engine.Timing = dataclasses.field(default_factory=engine.Timing)

  @classmethod
  def open(cls, cfg: config_lib.RunConfig, workdir: Path, data: RunData) -> Session:
    clock = engine.Timing()  # from here: the source encoder's pre-training is in total_s
    mesh = _mesh(cfg)
    module, variables0 = initial_model(cfg, len(data.dataset.class_names))
    oracle = make_oracle(cfg, workdir, data, module)
    return cls(cfg, Path(workdir), data, oracle, module, variables0, mesh, _clock=clock)

  @property
  def timing(self) -> dict[str, float]:
    """Seconds since `open`: {compile_s, train_s, score_s, predict_s, evaluate_s,
    total_s}. compile_s is XLA's (engine.timing) and overlaps the phase that compiled."""
    return self._clock.as_dict()

  def carry_timing(self, earlier: Mapping[str, float] | None) -> None:
    """Counts the seconds of this run's earlier processes (from its summary) in `timing`."""
    self._clock.carry(dict(earlier or {}))

  @property
  def volumes(self) -> Mapping[str, data_lib.Volume]:
    return self.data.volumes

  @property
  def class_names(self) -> tuple[str, ...]:
    return self.data.dataset.class_names

  @property
  def _sw(self) -> dict:
    return window_settings(self.cfg)

  # -------------------------------------------------------------------- training

  def fit(
    self,
    variables,
    labels: Mapping[str, np.ndarray],
    pseudo: Mapping[str, np.ndarray],
    epochs: int,
    *,
    round_: int,
    stage: str,
  ):
    """Fine-tunes from `variables` on labeled ∪ pseudo cases; returns new variables.

    On a non-finite loss the last good state goes to round_XXX/diverged_<stage>/ and
    TrainingDiverged is raised (it names the round, stage and step).
    """
    with self._clock.phase("train_s"):
      return self._fit(variables, labels, pseudo, epochs, round_, stage)

  def _fit(self, variables, labels, pseudo, epochs: int, round_: int, stage: str):
    tr = self.cfg.train
    targets = {**labels, **pseudo}
    ids = list(targets)
    spe = tr.steps_per_epoch or math.ceil(len(ids) / tr.batch_size)
    n_steps = epochs * spe
    tx, step = self._step_for(n_steps)
    # create_state copies: the step donates its state, and the caller's variables (e.g.
    # F(0), which E(0) embeddings come from) must stay valid.
    state = engine.create_state(variables, tx)
    seed = int(np.random.SeedSequence([self.cfg.seed, round_, _STAGES[stage]]).generate_state(1)[0])
    loader = data_lib.make_loader(
      self.volumes, ids, tr.patch, tr.batch_size, seed, pseudo=targets, num_batches=n_steps
    )
    rd = wd_lib.round_dir(self.workdir, round_)
    log_path = rd / f"train_{stage}.jsonl"
    # A stage reruns whole after a kill or a NaN stop: the records (maybe a half line) of
    # the abandoned attempt go, so the log holds the attempt whose network is kept.
    log_path.unlink(missing_ok=True)
    state, _ = engine.fine_tune(
      state,
      step,
      loader,
      epochs,
      spe,
      jax.random.PRNGKey(seed),
      round_=round_,
      log_path=log_path,
      desc=f"r{round_} {stage}",
      diverged_dir=rd / f"diverged_{stage}",
      progress=sys.stderr.isatty(),
    )
    return engine.variables_of(state)

  def _step_for(self, n_steps: int):
    """One compiled step per schedule length: rounds of equal length never recompile."""
    if n_steps not in self._steps:
      tr = self.cfg.train
      tx = engine.make_optimizer(tr.lr, n_steps, tr.weight_decay, clip_norm=tr.clip_norm)
      aug = data_lib.AugmentConfig() if tr.augment else None
      step = engine.make_train_step(
        self.module,
        tx,
        self.mesh,
        len(self.class_names),
        precision=tr.precision,
        augment_cfg=aug,
      )
      self._steps[n_steps] = (tx, step)
    return self._steps[n_steps]

  # ------------------------------------------------------------------- inference

  def score(self, variables, ids: Sequence[str], r: int, R: int) -> dict:
    """Per-case stats of F(r) (and the cached E(0) embeddings) for the strategies, with
    "dice_gt" [N]: F(r)'s Dice against the ground truth, NaN where there is none."""
    with self._clock.phase("score_s"):
      return engine.score_pass(
        self.module,
        variables,
        self.volumes,
        list(ids),
        r=r,
        R=R,
        emb0_variables=self.variables0,
        emb0_cache=self.cfg.cache / "emb0",
        **self._sw,
      )

  def embed0(self, ids: Sequence[str]) -> np.ndarray:
    """E(0) embeddings [N, F] of the pre-trained encoder (cached across rounds)."""
    with self._clock.phase("score_s"):
      return engine.embed0(
        self.module,
        self.variables0,
        self.volumes,
        list(ids),
        cache=self.cfg.cache / "emb0",
        **self._sw,
      )

  def predict(self, variables, ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Hard labels {id: [D, H, W] int32} of `variables` on the preprocessed grid."""
    with self._clock.phase("predict_s"):
      return engine.predict_labels(self.module, variables, self.volumes, list(ids), **self._sw)

  def evaluate(self, variables) -> dict:
    """engine.evaluate over the test split: {mean, sd, n_cases, per_class, per_case},
    with HD95 and NSD at --nsd_tolerance_mm under "hd95" and "nsd"."""
    with self._clock.phase("evaluate_s"):
      return engine.evaluate(
        self.module,
        variables,
        self.volumes,
        list(self.data.split["test"]),
        num_classes=len(self.class_names),
        class_names=self.class_names,
        nsd_tolerance_mm=self.cfg.eval.nsd_tolerance_mm,
        **self._sw,
      )


# ----------------------------------------------------------------------- helpers


def _strata(cfg: config_lib.RunConfig, dataset: data_lib.Dataset) -> dict[str, str] | None:
  """--stratify_by's id -> stratum, or None for a plain random split."""
  if not cfg.data.stratify_by:
    return None
  groups = data_lib.case_groups(dataset, cfg.data.stratify_by)
  counts = dict(collections.Counter(groups[c.id] for c in dataset.cases if c.label is not None))
  n_test = max(1, round(cfg.data.test_fraction * len(dataset.cases)))
  thin = sorted(g for g, n in counts.items() if n < 2)
  if thin or n_test < len(counts):
    raise config_lib.ConfigError(
      f"--stratify_by={','.join(cfg.data.stratify_by)}: a stratified test split of "
      f"{n_test} cases needs at least two labeled cases per stratum and one test case per "
      f"stratum; strata {counts}"
    )
  return groups


def preprocess_config(cfg: config_lib.RunConfig) -> data_lib.PreprocessConfig:
  d = cfg.data
  return data_lib.PreprocessConfig(
    pipeline=d.pipeline, crop_size=d.crop_size, spacing=d.spacing, orientation=d.orientation
  )


def load_dataset(cfg: config_lib.RunConfig) -> data_lib.Dataset:
  """The user's dataset, or the built-in phantom target domain generated into the cache."""
  d = cfg.data
  root = (
    Path(d.data_dir)
    if d.data_dir
    else pretrain.ensure_phantom(
      cfg.cache,
      d.phantom_domain,
      d.phantom_n,
      d.phantom_shape,
      d.phantom_seed,
      d.phantom_hard_fraction,
      d.phantom_shares,
    )
  )
  return data_lib.load_index(
    root,
    d.layout,
    label_map=parse_label_map(d.label_map),
    drop_labels=d.drop_labels,
    keep_labels=d.keep_labels,
    require_labels=cfg.al.oracle == "ground_truth",
    include=d.include,
    splits=d.splits,
  )


def window_settings(cfg: config_lib.RunConfig) -> dict:
  """The sliding window of every inference of a run (and of experiments.predict on its
  model): the training patch as the window."""
  return dict(roi=cfg.train.patch, sw_batch_size=cfg.train.sw_batch_size)


def make_oracle(
  cfg: config_lib.RunConfig, workdir: Path, data: RunData, module: Any = None
) -> oracle_lib.Oracle:
  """The run's oracle; the manifest kind gets pre-annotations from the rounds' saved
  models of `module`'s architecture (none without a module)."""
  if cfg.al.oracle == "ground_truth":
    return oracle_lib.GroundTruthOracle(data.volumes)
  return oracle_lib.ManifestOracle(
    data.dataset,
    preprocess_config(cfg),
    workdir,
    Path(cfg.al.labels_dir),
    cfg.al.annotation_dir,
    predict=None if module is None else _query_model_outputs(cfg, workdir, module, data.volumes),
  )


def _query_model_outputs(cfg, workdir: Path, module, volumes) -> oracle_lib.Preannotator:
  """The manifest oracle's `predict(ids, r)`: the outputs of F(r-1), the model whose
  scores chose round r's query, read back from round r-1's saved network (the loop hands
  the oracle no model, and the saved one is F(r-1) also after a resume)."""

  def predict(ids: Sequence[str], r: int):
    variables = wd_lib.load_model(workdir, r - 1)
    for cid, pred in engine_predict.iter_outputs(
      module, variables, volumes, list(ids), **window_settings(cfg)
    ):
      yield cid, pred, volumes[cid].meta

  return predict


def initial_model(cfg: config_lib.RunConfig, num_classes: int):
  """F(0) = [E(p); D(0)]: the pre-trained encoder and a fresh He-initialised decoder.

  The patch is checked against the network actually loaded (CT-FM has 5 levels, the
  phantom encoder as many as --blocks_down says).
  """
  src = cfg.model.pretrained or pretrain.ensure_source_encoder(cfg)
  module, variables = models.load_pretrained(
    src,
    out_channels=num_classes,
    rng=jax.random.PRNGKey(cfg.seed),
    conv_impl=cfg.model.conv_impl,
    dsdepth=cfg.model.dsdepth,
  )
  config_lib.check_patch(cfg.train.patch, len(module.blocks_down), str(src))
  return module, variables


def _mesh(cfg):
  devs = jax.local_devices()
  n = cfg.train.devices or len(devs)
  if n > len(devs):
    raise config_lib.ConfigError(f"--devices={n}: only {len(devs)} local device(s)")
  if cfg.train.batch_size % n:
    raise config_lib.ConfigError(
      f"--batch_size={cfg.train.batch_size} must divide by the "
      f"{n} device(s) of the data-parallel mesh (--devices)"
    )
  return engine.make_mesh(devs[:n])
