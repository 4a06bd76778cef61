"""One typed, frozen config for a run, and the one declaration of every run flag.

Each field below is declared once, with `option(default, help=..., choices=...)`
(`assft_jax.declare`). `assft_jax.flags` defines one absl flag per field, named as the
field, whose kind follows the field's type, builds the RunConfig back from the parsed
flags, and `validate` checks the same choices. A new setting is one new field here.

`RunConfig.to_json()` is what lands in `workdir/config.json`; a rerun compares the
two and refuses a workdir that holds another config, naming the flags that differ.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from assft_jax import declare
from assft_jax.declare import Option, option
from assft_jax.errors import AssftError

BOUNDS = ("lower_bound", "upper_bound")
"""The runs that bound an AL comparison (--lower_bound, --upper_bound): their `al.mode`
and the name their summary and the report give them."""


class ConfigError(AssftError, ValueError):
  """A flag value that cannot run; the message names the flag."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
  data_dir: str | None = option(
    None, help="NIfTI dataset root; default: the built-in phantom benchmark."
  )
  layout: str = option(
    "auto",
    help="Dataset layout: auto | msd | nnunet | flare21 | atlas | generic "
    "(see assft_jax.data.datasets).",
  )
  drop_labels: tuple[str, ...] = option(
    (),
    help="Class names merged into background (AMOS-MRI drops bladder,prostate/uterus).",
  )
  keep_labels: tuple[str, ...] = option(
    (),
    help="The only classes kept (names or values, e.g. liver,spleen); every other one "
    "becomes background. Excludes --drop_labels.",
  )
  label_map: tuple[str, ...] = option(
    (),
    help="Renames as old:new (old: a declared name or value), e.g. kidney_left:kidney,"
    "kidney_right:kidney; equal new names merge, new name 'background' drops.",
  )
  include: str | None = option(
    None,
    help="Regex on case ids; only matching cases are used (AMOS22: CT ids < 500, MRI >= 500).",
  )
  splits: tuple[str, ...] = option(
    ("training",),
    help="dataset.json lists to read (msd layout; AMOS22 has 100 more labeled cases "
    "under 'validation').",
  )
  pipeline: str = option(
    "paper",
    help="Intensity preprocessing: paper (5-95 pct clip + z-score) or ctfm (HU window to 0..1).",
    choices=("paper", "ctfm"),
  )
  crop_size: tuple[int, ...] | None = option(
    None,
    help="Fixed sub-volume D,H,W per case (paper §4.1); default: the whole (cropped) volume.",
  )
  spacing: tuple[float, ...] | None = option(
    None, help="Resample to this spacing (mm), e.g. 1.5,1.5,2; default: as stored."
  )
  orientation: str | None = option(None, help="Reorient to RAS or SPL (CT-FM); default: as stored.")
  test_fraction: float = option(0.2, help="Held-out test split share (never queried).")
  stratify_by: tuple[str, ...] = option(
    (),
    help="Per-case fields of dataset.json's 'cases' table (e.g. scanner,hard) whose "
    "strata the test split keeps in proportion; default: a plain random split.",
  )
  phantom_domain: str = option("mr", help="Phantom target domain.", choices=("ct", "mr"))
  phantom_n: int = option(40, help="Phantom target cases.")
  phantom_shape: tuple[int, ...] = option((32, 32, 32), help="Phantom volume D,H,W.")
  phantom_seed: int = option(0, help="Phantom generator seed.")
  phantom_hard_fraction: float = option(0.15, help="Phantom target: share of hard cases.")
  phantom_shares: tuple[float, ...] | None = option(
    None, help="Phantom MR target: the shares of scanners A,B,C; default 0.6,0.3,0.1."
  )


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  pretrained: str | None = option(
    None,
    help="weights_port or experiments.pretrain output dir; default: the phantom source "
    "encoder (pre-trained once into the cache).",
  )
  init_filters: int = option(8, help="Width of the phantom source encoder.")
  blocks_down: tuple[int, ...] = option(
    (1, 2, 2, 4), help="Blocks per level of the phantom source encoder."
  )
  dsdepth: int = option(1, help="Deep-supervision heads (1 = none).")
  norm: str = option("batch", help="Normalisation layers.", choices=("batch", "instance", "group"))
  conv_impl: str = option(
    "auto",
    help="Conv implementation; auto = onednn on one CPU device where its extension is "
    "built (python -m assft_jax.models.onednn_build), else s2d on CPU, native elsewhere. "
    "Resolved when the run starts and recorded in config.json: a resume that would "
    "switch kernels is refused (--allow_kernel_switch).",
    choices=("auto", "native", "s2d", "onednn"),
  )
  source_steps: int = option(
    150, help="Steps of the phantom source-encoder pretraining (only without --pretrained)."
  )
  source_lr: float = option(3e-3, help="Peak learning rate of that pretraining.")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  epochs_init: int = option(100, help="Epochs of the one-shot init (r = 0).")
  epochs_round: int = option(400, help="Epochs of each fine-tuning stage.")
  steps_per_epoch: int = option(
    1, help="Steps per epoch; 0 = ceil(training cases / batch size), one pass over them."
  )
  max_stage_steps: int = option(
    0,
    help="Cap on the optimiser steps of a fine-tuning stage, kept to whole epochs (0: none). "
    "With --steps_per_epoch=0 a stage's steps grow with the labeled set, as the paper's "
    "epochs do; this bounds them.",
  )
  patch: tuple[int, ...] = option((32, 32, 32), help="Training patch and inference window D,H,W.")
  batch_size: int = option(2, help="Global batch size (split over devices).")
  lr: float = option(1e-4, help="AdamW peak learning rate (polynomial decay).")
  weight_decay: float = option(1e-5, help="AdamW weight decay.")
  clip_norm: float | None = option(None, help="Gradient clipping by global norm; default: off.")
  precision: str = option("fp32", help="Compute precision.", choices=("fp32", "bf16"))
  devices: int = option(0, help="Local devices for data parallelism; 0 = all.")
  augment: bool = option(True, help="Paper §4.2 augmentation during fine-tuning.")
  sw_batch_size: int = option(2, help="Windows per sliding-window batch.")


@dataclasses.dataclass(frozen=True)
class ALConfig:
  strategy: str = option("assft", help="Query strategy (assft, random, entropy, ...).")
  ssft: bool | None = option(
    None,
    help="Selective semi-supervised fine-tuning (stages 2-3); default: on for "
    "--strategy=assft only, as the sweep's arm names mean (random+ssft: random with it).",
  )
  stage3: str = option(
    "auto",
    help="Stage 3 of each round: auto = on T_l and pseudo-labels with --ssft, none without; "
    "supervised = the compute-matched control (needs --nossft): a second supervised stage "
    "of --epochs_round epochs on T_l only, ASSFT's optimiser steps without pseudo-labels.",
    choices=("auto", "supervised"),
  )
  rounds: int = option(5, help="AL rounds R.")
  budget: str = option(
    "5%", help="Per-round budget: a share of the target pool ('5%') or a count ('2')."
  )
  init_pick: str = option(
    "medoid", help="How the r = 0 case is picked.", choices=("medoid", "random", "first")
  )
  tau_c: float = option(1.0, help="Confidence temperature of Eq. 24.")
  oracle: str = option(
    "ground_truth",
    help="Who labels the queries: the ground truth, or annotators through a manifest.",
    choices=("ground_truth", "manifest"),
  )
  labels_dir: str | None = option(None, help="Manifest oracle: where annotators write labels.")
  annotation_dir: str | None = option(
    None, help="Manifest oracle: also link the queried images here for the annotators."
  )
  mode: str = option(
    "al",
    help="An AL run, or a bound (set by --lower_bound / --upper_bound).",
    choices=("al", *BOUNDS),
    flag=False,
  )


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  nsd_tolerance_mm: float = option(
    2.0,
    help="Tolerance (mm) of the normalised surface Dice reported beside Dice and HD95.",
  )


@dataclasses.dataclass(frozen=True)
class RunConfig:
  workdir: str = option(help="Where the run writes everything (and resumes from).")
  seed: int = option(0, help="Seed of the split, the queries and the training.")
  cache_dir: str | None = option(
    None,
    help="Shared cache (phantom data, preprocessed arrays, the source encoder, "
    "E0 embeddings); default WORKDIR/cache.",
  )
  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()
  train: TrainConfig = TrainConfig()
  al: ALConfig = ALConfig()
  eval: EvalConfig = EvalConfig()

  @property
  def cache(self) -> Path:
    return Path(self.cache_dir) if self.cache_dir else Path(self.workdir) / "cache"

  @property
  def strategy_name(self) -> str:
    """The run's name in summaries and reports: the strategy, or the bound it measures."""
    return self.al.mode if self.al.mode in BOUNDS else self.al.strategy

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, d: Mapping[str, Any]) -> RunConfig:
    """The inverse of to_json (lists back to tuples); keys it does not declare are ignored."""
    return declare.from_tree(cls, d)


@functools.cache
def options() -> tuple[Option, ...]:
  """Every declared field of RunConfig, in field order (its own, then each section's)."""
  return declare.walk(RunConfig)


# Fields that may change between the runs of one workdir without changing its results.
_RUN_CONTROL = {"workdir", "train.devices", "al.annotation_dir"}


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, Mapping):
      out.update(flatten(v, key + "."))
    else:
      out[key] = list(v) if isinstance(v, tuple) else v
  return out


def _defaults() -> dict[str, Any]:
  """{"section.name": the declared default} of every field, flattened as `flatten` does."""
  out = {}
  for o in options():
    key = f"{o.section}.{o.name}" if o.section else o.name
    out[key] = list(o.default) if isinstance(o.default, tuple) else o.default
  return out


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
  """Flag-level differences `name: old -> new`, ignoring run-control fields.

  A field that `old` (an earlier config.json) lacks was added since that run was made, so
  the run used its default: it reads as that default, and such a run still resumes.
  """
  a, b = {**_defaults(), **flatten(old)}, flatten(new)
  keys = sorted((set(a) | set(b)) - _RUN_CONTROL)
  return [f"{k.split('.')[-1]}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def stage_epochs(cfg: RunConfig, n_cases: int, epochs: int) -> tuple[int, int]:
  """(epochs, steps per epoch) of a fine-tuning stage of `epochs` epochs on `n_cases`:
  an epoch is --steps_per_epoch steps, or one pass over the cases (ceil(n / batch));
  with --max_stage_steps the epochs are cut to the most whole epochs within the cap
  (at least one)."""
  tr = cfg.train
  spe = tr.steps_per_epoch or math.ceil(n_cases / tr.batch_size)
  if tr.max_stage_steps and epochs * spe > tr.max_stage_steps:
    epochs = max(1, tr.max_stage_steps // spe)
  return epochs, spe


def budget_per_round(budget: str, pool_size: int) -> int:
  """N_B from '5%' (ceil of the share of the pool, at least 1) or an absolute count."""
  text = str(budget).strip()
  try:
    if text.endswith("%"):
      pct = float(text[:-1])
      if not 0 < pct <= 100:
        raise ValueError
      return max(1, math.ceil(pct / 100.0 * pool_size))
    n = int(text)
    if n < 1:
      raise ValueError
    return n
  except ValueError:
    raise ConfigError(
      f"--budget={budget!r}: expected a percentage such as '5%' or a positive count such as '2'"
    ) from None


def _check_divisible(flag: str, shape: tuple[int, ...], levels: int, source: str) -> None:
  # Each of the levels-1 stride-2 downsamplings halves the volume exactly.
  d = 2 ** (levels - 1)
  if len(shape) != 3 or any(s < 1 or s % d for s in shape):
    raise ConfigError(
      f"--{flag}={','.join(map(str, shape))}: need 3 sizes divisible by {d} "
      f"(2^(levels-1) for the {levels} levels of {source})"
    )


def check_patch(patch: tuple[int, ...], levels: int, source: str) -> None:
  """ConfigError unless `patch` (D, H, W) fits a network of `levels` resolutions.

  `source` names the network in the message, e.g. the --pretrained path.
  """
  _check_divisible("patch", patch, levels, source)


def resolve_ssft(cfg: RunConfig) -> RunConfig:
  """cfg with an unset --ssft made concrete: on for the assft strategy, off for every
  other one. ASSFT is the paper's only row with SSFT, and the sweep names an arm
  `<strategy>+ssft` when it wants it, so one strategy name means one arm everywhere."""
  if cfg.al.ssft is not None:
    return cfg
  return dataclasses.replace(cfg, al=dataclasses.replace(cfg.al, ssft=cfg.al.strategy == "assft"))


def validate(cfg: RunConfig) -> None:
  """Checks that need no data; the loop checks the budget against the pool.

  The patch is checked here against --blocks_down only for the phantom source encoder;
  with --pretrained the session checks it (`check_patch`) once the network is loaded.
  """
  al, tr = cfg.al, cfg.train
  if al.rounds < 1 and al.mode == "al":
    raise ConfigError(f"--rounds={al.rounds}: must be at least 1")
  budget_per_round(al.budget, 10**6)
  for opt in options():
    value = opt.value(cfg)
    if opt.choices and value not in opt.choices:
      raise ConfigError(f"--{opt.name}={value!r}: expected one of {', '.join(opt.choices)}")
  if al.stage3 == "supervised" and resolve_ssft(cfg).al.ssft:
    raise ConfigError(
      "--stage3=supervised is the control without pseudo-labels: it needs --nossft "
      "(--ssft runs its own stage 3 on the pseudo-labels)"
    )
  if al.oracle == "manifest" and not al.labels_dir:
    raise ConfigError("--oracle=manifest needs --labels_dir (where annotators put labels)")
  tol = cfg.eval.nsd_tolerance_mm
  if not (math.isfinite(tol) and tol >= 0):
    raise ConfigError(f"--nsd_tolerance_mm={tol}: must be a finite distance >= 0 (mm)")
  if not 0 < cfg.data.test_fraction < 1:
    raise ConfigError(f"--test_fraction={cfg.data.test_fraction}: must be in (0, 1)")
  if not 0 <= cfg.data.phantom_hard_fraction <= 1:
    raise ConfigError(
      f"--phantom_hard_fraction={cfg.data.phantom_hard_fraction}: must be in [0, 1]"
    )
  sh = cfg.data.phantom_shares
  if sh is not None and (len(sh) != 3 or min(sh) < 0 or abs(sum(sh) - 1) > 1e-6):
    raise ConfigError(
      f"--phantom_shares={','.join(map(str, sh))}: want three shares (scanners A,B,C) "
      ">= 0 that sum to 1"
    )
  levels = len(cfg.model.blocks_down)
  source = f"--blocks_down={','.join(map(str, cfg.model.blocks_down))}"
  if not cfg.model.pretrained:
    check_patch(tr.patch, levels, source)
  _check_divisible("phantom_shape", cfg.data.phantom_shape, levels, source)
  for flag, v in (
    ("epochs_init", tr.epochs_init),
    ("epochs_round", tr.epochs_round),
    ("batch_size", tr.batch_size),
  ):
    if v < 1:
      raise ConfigError(f"--{flag}={v}: must be at least 1")
  if tr.steps_per_epoch < 0:
    raise ConfigError(f"--steps_per_epoch={tr.steps_per_epoch}: must be 0 (auto) or more")
  if tr.max_stage_steps < 0:
    raise ConfigError(f"--max_stage_steps={tr.max_stage_steps}: must be 0 (no cap) or more")
