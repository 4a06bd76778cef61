"""A run's parts, built from its RunConfig: the settings left to the machine made concrete,
the dataset, its preprocessing, the test split, F(0), the mesh, the sliding window, and
the calls a run makes on its networks (fit, score, embed0, predict, evaluate).

The loop reaches them through `session` (which adds the workdir and the oracle); the tools
that need a run's parts without being a run (`power`, `deploy.predict`) build them here,
so a flagfile means the same data, network and window to all of them.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from assft_jax import atomic, engine, models, pretrain
from assft_jax import config as config_lib
from assft_jax import data as data_lib
from assft_jax import workdir as wd_lib
from assft_jax.data.classes import parse_label_map
from assft_jax.models.layers import choose_conv_impl
from assft_jax.pool import draw_split

log = logging.getLogger("assft_jax.components")

# Stage -> the seed stream of its loader and augmentation (fixed: resume reproduces it).
STAGES = {"init": 0, "s1": 1, "s3": 3, "upper": 4}


# ------------------------------------------------------------------ the settings


def resolve(cfg: config_lib.RunConfig) -> config_lib.RunConfig:
  """cfg with what the user left open made concrete, once, when the config is built:
  --ssft unset -> on for the assft strategy only (the paper's ASSFT row; every other
  strategy is compared without SSFT unless asked), and --conv_impl=auto -> the kernel this
  machine runs for the run's devices and precision (`kernel`). Idempotent. The result is
  what config.json records, so a resume on a machine that would pick another kernel is
  seen (`workdir.open_workdir`)."""
  cfg = config_lib.resolve_ssft(cfg)
  impl, _ = kernel(cfg)
  if impl == cfg.model.conv_impl:
    return cfg
  return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, conv_impl=impl))


def kernel(cfg: config_lib.RunConfig) -> tuple[str, str]:
  """(the conv implementation the run's layers use, why): --conv_impl for the devices of
  the run's mesh and its compute precision. ConfigError naming --conv_impl when an
  explicit one cannot run here."""
  dtype = np.float32 if cfg.train.precision == "fp32" else jax.numpy.bfloat16
  n = cfg.train.devices or jax.local_device_count()
  try:
    return choose_conv_impl(cfg.model.conv_impl, dtype, n)
  except ValueError as e:
    raise config_lib.ConfigError(f"--conv_impl={cfg.model.conv_impl}: {e}") from None


def provenance(cfg: config_lib.RunConfig, program: str = "alone") -> dict:
  """What made a run's numbers, besides its config: the conv kernel and precision, how
  its training ran (`program`: "alone", or "loop" / "vmap" with other runs in one process,
  assft_jax.group), the jax and jaxlib versions, the backend and device kind, and the
  source commit (with "+dirty" when the checkout has uncommitted changes; None outside a
  git checkout)."""
  import jaxlib

  dev = jax.local_devices()[0]
  return {
    "conv_impl": cfg.model.conv_impl,
    "program": program,
    "precision": cfg.train.precision,
    "jax": jax.__version__,
    "jaxlib": jaxlib.__version__,
    "backend": jax.default_backend(),
    "device_kind": dev.device_kind,
    "commit": _commit(),
  }


def _commit() -> str | None:
  root = Path(__file__).resolve().parent.parent
  if not (root / ".git").exists():
    return None
  try:
    head = subprocess.run(
      ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
      capture_output=True,
      text=True,
      timeout=10,
    )
    dirty = subprocess.run(
      ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
      capture_output=True,
      text=True,
      timeout=10,
    )
  except (OSError, subprocess.SubprocessError):
    return None
  if head.returncode != 0:
    return None
  return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


# ---------------------------------------------------------------------- the data


@dataclasses.dataclass(frozen=True)
class RunData:
  """The target data of a run: the index, the preprocessed volumes and the test split."""

  dataset: data_lib.Dataset
  volumes: Mapping[str, data_lib.Volume]
  split: Mapping[str, list[str]]  # {"test": ids, "pool": ids}


def open_data(cfg: config_lib.RunConfig, workdir: Path) -> RunData:
  """Index and preprocess the dataset (cached), and draw or reload the test split
  (WORKDIR/split.json, stored once: a resume cannot redraw it)."""
  dataset = load_dataset(cfg)
  volumes = data_lib.prepare(dataset, preprocess_config(cfg), cfg.cache / "preprocessed")
  path = Path(workdir) / "split.json"
  split = wd_lib.read_json(path)
  if split is None:
    split = draw_split(
      [c.id for c in dataset.cases],
      [c.id for c in dataset.cases if c.label is not None],
      cfg.data.test_fraction,
      cfg.seed,
      strata(cfg, dataset),
    )
    atomic.write_json(path, split)
  return RunData(dataset, volumes, split)


def strata(cfg: config_lib.RunConfig, dataset: data_lib.Dataset) -> dict[str, str] | None:
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


# ------------------------------------------------------------------- the network


def initial_model(cfg: config_lib.RunConfig, num_classes: int):
  """F(0) = [E(p); D(0)]: the pre-trained encoder and a fresh He-initialised decoder, with
  the run's conv implementation.

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


def make_mesh(cfg: config_lib.RunConfig):
  """The data-parallel mesh of --devices local devices (0: all of them)."""
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


def stage_seed(seed: int, round_: int, stage: str) -> int:
  """The seed of one training stage's loader and augmentation: a function of the run's
  seed, the round and the stage alone, so a resumed stage draws what it drew before."""
  return int(np.random.SeedSequence([seed, round_, STAGES[stage]]).generate_state(1)[0])


@dataclasses.dataclass
class Trainer:
  """F(0) and the calls a run makes on networks, bound to its config; each one's wall time
  goes into `clock` (`engine.Timing`)."""

  cfg: config_lib.RunConfig
  volumes: Mapping[str, data_lib.Volume]
  class_names: tuple[str, ...]
  module: Any
  variables0: Any  # F(0): the pre-trained encoder with a fresh decoder
  mesh: Any
  clock: engine.Timing = dataclasses.field(default_factory=engine.Timing)
  _steps: dict = dataclasses.field(default_factory=dict)
  # With several runs in one process (assft_jax.group): trains this run's stages together
  # with the other runs' that share their schedule. None: each stage alone.
  batcher: Any = None

  @classmethod
  def open(cls, cfg: config_lib.RunConfig, data: RunData) -> Trainer:
    clock = engine.Timing()  # from here: the source encoder's pre-training is in total_s
    mesh = make_mesh(cfg)
    module, variables0 = initial_model(cfg, len(data.dataset.class_names))
    return cls(cfg, data.volumes, data.dataset.class_names, module, variables0, mesh, clock)

  @property
  def _sw(self) -> dict:
    return window_settings(self.cfg)

  def fit(
    self,
    variables,
    targets: Mapping[str, np.ndarray],
    epochs: int,
    seed: int,
    *,
    round_: int | None = None,
    desc: str = "",
    log_path: Path | None = None,
    diverged_dir: Path | None = None,
  ):
    """Fine-tunes from `variables` on `targets` {id: [D, H, W] labels} for `epochs` epochs;
    returns new variables. `seed` draws the batches and the augmentation (`stage_seed`);
    `round_` and `desc` name the stage in the log records and errors.

    On a non-finite loss the last good state goes to `diverged_dir` and TrainingDiverged
    is raised (it names the round, stage and step).
    """
    with self.clock.phase("train_s"):
      tr = self.cfg.train
      ids = list(targets)
      spe = tr.steps_per_epoch or math.ceil(len(ids) / tr.batch_size)
      n_steps = epochs * spe
      tx, step = self._step_for(n_steps)
      # create_state copies: the step donates its state, and the caller's variables (e.g.
      # F(0), which E(0) embeddings come from) must stay valid.
      state = engine.create_state(variables, tx)
      loader = data_lib.make_loader(
        self.volumes, ids, tr.patch, tr.batch_size, seed, pseudo=targets, num_batches=n_steps
      )
      rng = jax.random.PRNGKey(seed)
      if self.batcher is not None:
        state, _ = self.batcher.fit(
          self,
          state,
          loader,
          rng,
          epochs,
          spe,
          round_=round_,
          desc=desc,
          log_path=log_path,
          diverged_dir=diverged_dir,
        )
        return engine.variables_of(state)
      state, _ = engine.fine_tune(
        state,
        step,
        loader,
        epochs,
        spe,
        rng,
        round_=round_,
        log_path=log_path,
        desc=desc,
        diverged_dir=diverged_dir,
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

  def score(self, variables, ids: Sequence[str], r: int, R: int) -> dict:
    """Per-case stats of `variables` (and the cached E(0) embeddings) for the strategies,
    with "dice_gt" [N]: their Dice against the ground truth, NaN where there is none."""
    with self.clock.phase("score_s"):
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
    with self.clock.phase("score_s"):
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
    with self.clock.phase("predict_s"):
      return engine.predict_labels(self.module, variables, self.volumes, list(ids), **self._sw)

  def evaluate(self, variables, ids: Sequence[str]) -> dict:
    """engine.evaluate over `ids`: {mean, sd, n_cases, per_class, per_case}, with HD95 and
    NSD at --nsd_tolerance_mm under "hd95" and "nsd"."""
    with self.clock.phase("evaluate_s"):
      return engine.evaluate(
        self.module,
        variables,
        self.volumes,
        list(ids),
        num_classes=len(self.class_names),
        class_names=self.class_names,
        nsd_tolerance_mm=self.cfg.eval.nsd_tolerance_mm,
        **self._sw,
      )
