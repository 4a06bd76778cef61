"""One typed, frozen config for a run, built from absl flags (STYLE.md §3).

`RunConfig.to_json()` is what lands in `workdir/config.json`; a rerun compares the
two and refuses a workdir that holds another config, naming the flags that differ.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from assft_jax.errors import AssftError


class ConfigError(AssftError, ValueError):
  """A flag value that cannot run; the message names the flag."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
  data_dir: str | None = None
  """NIfTI dataset root; None means the built-in phantom benchmark."""
  layout: str = "auto"
  """auto | msd | flare21 | nnunet | generic (see assft_jax.data.datasets)."""
  drop_labels: tuple[str, ...] = ()
  """Class names to merge into background (e.g. AMOS-MRI drops bladder, prostate/uterus)."""
  include: str | None = None
  """Regex on case ids: keep only matching cases (AMOS22 keeps CT < 500, MRI >= 500)."""
  splits: tuple[str, ...] = ("training",)
  """dataset.json lists to read (AMOS22 has 100 more labeled cases under "validation")."""
  pipeline: str = "paper"
  """paper (5-95 pct clip + z-score + fixed crop) | ctfm (HU window to 0..1)."""
  crop_size: tuple[int, ...] | None = None
  """Fixed sub-volume per case (paper §4.1); None keeps the whole (cropped) volume."""
  spacing: tuple[float, ...] | None = None
  orientation: str | None = None
  test_fraction: float = 0.2
  """Held-out test split, never queried (DESIGN §2)."""
  phantom_domain: str = "mr"
  phantom_n: int = 40
  phantom_shape: tuple[int, ...] = (32, 32, 32)
  phantom_seed: int = 0


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  pretrained: str | None = None
  """A weights_port output or a pretrain output; None pre-trains on the phantom source domain."""
  init_filters: int = 8
  blocks_down: tuple[int, ...] = (1, 2, 2, 4)
  dsdepth: int = 1
  norm: str = "batch"
  conv_impl: str = "auto"
  source_steps: int = 150
  """Steps of the phantom source-domain pretraining (only when `pretrained` is None)."""
  source_lr: float = 3e-3
  """Peak learning rate of that pretraining."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  epochs_init: int = 100
  epochs_round: int = 400
  steps_per_epoch: int = 1
  """0 means ceil(training cases / batch_size): one pass over the training set."""
  patch: tuple[int, ...] = (32, 32, 32)
  batch_size: int = 2
  lr: float = 1e-4
  weight_decay: float = 1e-5
  clip_norm: float | None = None
  precision: str = "fp32"
  devices: int = 0
  """Local devices for data parallelism; 0 means all."""
  augment: bool = True
  sw_batch_size: int = 2


@dataclasses.dataclass(frozen=True)
class ALConfig:
  strategy: str = "assft"
  ssft: bool = True
  rounds: int = 5
  budget: str = "5%"
  """A percentage of the target pool ("5%") or an absolute count per round ("2")."""
  init_pick: str = "medoid"
  tau_c: float = 1.0
  oracle: str = "ground_truth"
  labels_dir: str | None = None
  annotation_dir: str | None = None
  """Manifest mode: also link the queried images here for the annotators."""
  mode: str = "al"
  """al | lower_bound | upper_bound."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
  workdir: str
  seed: int = 0
  cache_dir: str | None = None
  """Phantom data, preprocessed arrays, the source encoder and E0 embeddings; default workdir/cache."""
  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()
  train: TrainConfig = TrainConfig()
  al: ALConfig = ALConfig()

  @property
  def cache(self) -> Path:
    return Path(self.cache_dir) if self.cache_dir else Path(self.workdir) / "cache"

  @property
  def strategy_name(self) -> str:
    return {"lower_bound": "lower_bound", "upper_bound": "upper_bound"}.get(
      self.al.mode, self.al.strategy
    )

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, d: Mapping[str, Any]) -> RunConfig:
    def build(kind, values):
      fields = {f.name: f for f in dataclasses.fields(kind)}
      out = {}
      for k, v in values.items():
        if k not in fields:
          continue
        out[k] = tuple(v) if isinstance(v, list) else v
      return kind(**out)

    top = {k: v for k, v in d.items() if k not in ("data", "model", "train", "al")}
    return cls(
      **top,
      data=build(DataConfig, d.get("data", {})),
      model=build(ModelConfig, d.get("model", {})),
      train=build(TrainConfig, d.get("train", {})),
      al=build(ALConfig, d.get("al", {})),
    )


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


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
  """Flag-level differences `name: old -> new`, ignoring run-control fields."""
  a, b = flatten(old), flatten(new)
  keys = sorted((set(a) | set(b)) - _RUN_CONTROL)
  return [f"{k.split('.')[-1]}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


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


def validate(cfg: RunConfig) -> None:
  """Checks that need no data; the loop checks the budget against the pool."""
  al, tr = cfg.al, cfg.train
  if al.rounds < 1 and al.mode == "al":
    raise ConfigError(f"--rounds={al.rounds}: must be at least 1")
  budget_per_round(al.budget, 10**6)
  choices = {
    "init_pick": (al.init_pick, ("medoid", "random", "first")),
    "oracle": (al.oracle, ("ground_truth", "manifest")),
    "precision": (tr.precision, ("fp32", "bf16")),
    "mode": (al.mode, ("al", "lower_bound", "upper_bound")),
    "pipeline": (cfg.data.pipeline, ("paper", "ctfm")),
    "conv_impl": (cfg.model.conv_impl, ("auto", "native", "s2d")),
    "norm": (cfg.model.norm, ("batch", "instance", "group")),
  }
  for flag, (value, allowed) in choices.items():
    if value not in allowed:
      raise ConfigError(f"--{flag}={value!r}: expected one of {', '.join(allowed)}")
  if al.oracle == "manifest" and not al.labels_dir:
    raise ConfigError("--oracle=manifest needs --labels_dir (where annotators put labels)")
  if not 0 < cfg.data.test_fraction < 1:
    raise ConfigError(f"--test_fraction={cfg.data.test_fraction}: must be in (0, 1)")
  levels = len(cfg.model.blocks_down)
  for flag, shape in (("patch", tr.patch), ("phantom_shape", cfg.data.phantom_shape)):
    if len(shape) != 3 or any(s % 2 ** (levels - 1) for s in shape):
      raise ConfigError(
        f"--{flag}={','.join(map(str, shape))}: need 3 sizes divisible by "
        f"{2 ** (levels - 1)} (2^(levels-1) for blocks_down of {levels} levels)"
      )
  for flag, v in (
    ("epochs_init", tr.epochs_init),
    ("epochs_round", tr.epochs_round),
    ("batch_size", tr.batch_size),
  ):
    if v < 1:
      raise ConfigError(f"--{flag}={v}: must be at least 1")
  if tr.steps_per_epoch < 0:
    raise ConfigError(f"--steps_per_epoch={tr.steps_per_epoch}: must be 0 (auto) or more")


def write_json_atomic(path: Path, value: Any) -> None:
  """Temp file, then rename: a crash never leaves half a JSON file."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp")
  tmp.write_text(json.dumps(value, indent=1, sort_keys=False))
  tmp.replace(path)
