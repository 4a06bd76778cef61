"""absl flag definitions for a run, and the one function that turns them into a RunConfig.

experiments/run.py, experiments/sweep.py and the tests share these, so a flagfile means
the same thing to all of them.
"""

from __future__ import annotations

from absl import flags

from assft_jax import config as config_lib

_D, _M, _T, _A = (
  config_lib.DataConfig(),
  config_lib.ModelConfig(),
  config_lib.TrainConfig(),
  config_lib.ALConfig(),
)


def _csv(t) -> list[str] | None:
  return None if t is None else [str(x) for x in t]


class _Definer:
  """flags.DEFINE_* bound to one FlagValues (tests parse into a fresh one)."""

  def __init__(self, fv):
    self._fv = fv

  def __getattr__(self, name):
    define = getattr(flags, name)
    return lambda *a, **k: define(*a, flag_values=self._fv, **k)


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> flags.FlagValues:
  """Defines the run flags on `fv` once (absl refuses a second definition)."""
  if "workdir" in fv:
    return fv
  f = _Definer(fv)
  f.DEFINE_string("workdir", None, "Where the run writes everything (and resumes from).")
  f.DEFINE_integer("seed", 0, "Seed of the split, the queries and the training.")
  f.DEFINE_string(
    "cache_dir",
    None,
    "Shared cache (phantom data, preprocessed arrays, source "
    "encoder, E0 embeddings); default WORKDIR/cache.",
  )
  f.DEFINE_bool("overwrite", False, "Delete the workdir's run and start afresh.")
  # data
  f.DEFINE_string("data_dir", None, "NIfTI dataset root; default: the built-in phantom benchmark.")
  f.DEFINE_string("layout", _D.layout, "auto | msd | nnunet | flare21 | atlas | generic.")
  f.DEFINE_string("include", None, "Regex on case ids; only matching cases are used.")
  f.DEFINE_list("splits", list(_D.splits), "dataset.json lists to read (msd layout).")
  f.DEFINE_list("drop_labels", [], "Class names merged into background.")
  f.DEFINE_enum("pipeline", _D.pipeline, ["paper", "ctfm"], "Intensity preprocessing.")
  f.DEFINE_list("crop_size", None, "Fixed sub-volume D,H,W per case (paper §4.1).")
  f.DEFINE_list("spacing", None, "Resample to this spacing (mm), e.g. 1.5,1.5,2.")
  f.DEFINE_string("orientation", None, "Reorient to RAS or SPL (CT-FM); default: as stored.")
  f.DEFINE_float("test_fraction", _D.test_fraction, "Held-out test split share.")
  f.DEFINE_enum("phantom_domain", _D.phantom_domain, ["ct", "mr"], "Phantom target domain.")
  f.DEFINE_integer("phantom_n", _D.phantom_n, "Phantom target cases.")
  f.DEFINE_list("phantom_shape", _csv(_D.phantom_shape), "Phantom volume D,H,W.")
  f.DEFINE_integer("phantom_seed", _D.phantom_seed, "Phantom generator seed.")
  # model
  f.DEFINE_string(
    "pretrained",
    None,
    "weights_port or pretrain output dir; default: the "
    "phantom source encoder (pre-trained once into the cache).",
  )
  f.DEFINE_integer("init_filters", _M.init_filters, "Width of the phantom source encoder.")
  f.DEFINE_list("blocks_down", _csv(_M.blocks_down), "Blocks per level of the source encoder.")
  f.DEFINE_integer("dsdepth", _M.dsdepth, "Deep-supervision heads (1 = none).")
  f.DEFINE_enum("norm", _M.norm, ["batch", "instance", "group"], "Normalisation layers.")
  f.DEFINE_enum(
    "conv_impl",
    _M.conv_impl,
    ["auto", "native", "s2d"],
    "Strided/transposed conv implementation; auto = s2d on CPU.",
  )
  f.DEFINE_integer("source_steps", _M.source_steps, "Steps of phantom source pretraining.")
  f.DEFINE_float("source_lr", _M.source_lr, "Peak learning rate of that pretraining.")
  # training
  f.DEFINE_integer("epochs_init", _T.epochs_init, "Epochs of the one-shot init (r = 0).")
  f.DEFINE_integer("epochs_round", _T.epochs_round, "Epochs of each fine-tuning stage.")
  f.DEFINE_integer(
    "steps_per_epoch", _T.steps_per_epoch, "Steps per epoch; 0 = ceil(training cases / batch size)."
  )
  f.DEFINE_list("patch", _csv(_T.patch), "Training patch and inference window D,H,W.")
  f.DEFINE_integer("batch_size", _T.batch_size, "Global batch size (split over devices).")
  f.DEFINE_float("lr", _T.lr, "AdamW peak learning rate (polynomial decay).")
  f.DEFINE_float("weight_decay", _T.weight_decay, "AdamW weight decay.")
  f.DEFINE_float("clip_norm", None, "Gradient clipping by global norm (off by default).")
  f.DEFINE_enum("precision", _T.precision, ["fp32", "bf16"], "Compute precision.")
  f.DEFINE_integer("devices", _T.devices, "Local devices for data parallelism; 0 = all.")
  f.DEFINE_bool("augment", _T.augment, "Paper §4.2 augmentation during fine-tuning.")
  f.DEFINE_integer("sw_batch_size", _T.sw_batch_size, "Windows per sliding-window batch.")
  # active learning
  f.DEFINE_string("strategy", _A.strategy, "Query strategy (assft, random, entropy, ...).")
  f.DEFINE_bool("ssft", _A.ssft, "Selective semi-supervised fine-tuning (stages 2-3).")
  f.DEFINE_integer("rounds", _A.rounds, "AL rounds R.")
  f.DEFINE_string("budget", _A.budget, "Per-round budget: '5%' of the pool or a count '2'.")
  f.DEFINE_enum("init_pick", _A.init_pick, ["medoid", "random", "first"], "r = 0 case.")
  f.DEFINE_float("tau_c", _A.tau_c, "Confidence temperature of Eq. 24.")
  f.DEFINE_enum("oracle", _A.oracle, ["ground_truth", "manifest"], "Who labels queries.")
  f.DEFINE_string("labels_dir", None, "Manifest oracle: where annotators write labels.")
  f.DEFINE_string("annotation_dir", None, "Manifest oracle: link queried images here.")
  f.DEFINE_bool("lower_bound", False, "Evaluate without any target fine-tuning.")
  f.DEFINE_bool("upper_bound", False, "Fine-tune on all target pool cases.")
  return fv


def parse(argv: list[str]) -> config_lib.RunConfig:
  """RunConfig from command-line words (e.g. ['--flagfile=...', '--workdir=...'])."""
  fv = define_flags(flags.FlagValues())
  fv(["assft"] + list(argv))
  return config_from_flags(fv)


def _numbers(name: str, v, kind: type = int) -> tuple | None:
  """A comma-list flag as a tuple of `kind`; a clear error naming the flag otherwise."""
  if v is None:
    return None
  try:
    return tuple(kind(x) for x in v)
  except ValueError:
    what = "integers" if kind is int else "numbers"
    raise config_lib.ConfigError(f"--{name}={','.join(v)}: expected {what}") from None


def config_from_flags(F=flags.FLAGS) -> config_lib.RunConfig:
  if not F.workdir:
    raise config_lib.ConfigError("--workdir is required")
  if F.lower_bound and F.upper_bound:
    raise config_lib.ConfigError("--lower_bound and --upper_bound exclude each other")
  mode = "lower_bound" if F.lower_bound else "upper_bound" if F.upper_bound else "al"
  cfg = config_lib.RunConfig(
    workdir=F.workdir,
    seed=F.seed,
    cache_dir=F.cache_dir,
    data=config_lib.DataConfig(
      data_dir=F.data_dir,
      layout=F.layout,
      drop_labels=tuple(F.drop_labels),
      include=F.include,
      splits=tuple(F.splits),
      pipeline=F.pipeline,
      crop_size=_numbers("crop_size", F.crop_size),
      spacing=_numbers("spacing", F.spacing, float),
      orientation=F.orientation,
      test_fraction=F.test_fraction,
      phantom_domain=F.phantom_domain,
      phantom_n=F.phantom_n,
      phantom_shape=_numbers("phantom_shape", F.phantom_shape),
      phantom_seed=F.phantom_seed,
    ),
    model=config_lib.ModelConfig(
      pretrained=F.pretrained,
      init_filters=F.init_filters,
      blocks_down=_numbers("blocks_down", F.blocks_down),
      dsdepth=F.dsdepth,
      norm=F.norm,
      conv_impl=F.conv_impl,
      source_steps=F.source_steps,
      source_lr=F.source_lr,
    ),
    train=config_lib.TrainConfig(
      epochs_init=F.epochs_init,
      epochs_round=F.epochs_round,
      steps_per_epoch=F.steps_per_epoch,
      patch=_numbers("patch", F.patch),
      batch_size=F.batch_size,
      lr=F.lr,
      weight_decay=F.weight_decay,
      clip_norm=F.clip_norm,
      precision=F.precision,
      devices=F.devices,
      augment=F.augment,
      sw_batch_size=F.sw_batch_size,
    ),
    al=config_lib.ALConfig(
      strategy=F.strategy,
      ssft=F.ssft,
      rounds=F.rounds,
      budget=F.budget,
      init_pick=F.init_pick,
      tau_c=F.tau_c,
      oracle=F.oracle,
      labels_dir=F.labels_dir,
      annotation_dir=F.annotation_dir,
      mode=mode,
    ),
  )
  config_lib.validate(cfg)
  return cfg
