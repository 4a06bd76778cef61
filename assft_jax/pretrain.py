"""The built-in source domain: a CT-like phantom, and an encoder pre-trained on it.

Without `--pretrained`, a run needs a source encoder as CT-FM would be one. We train a
SegResNetDS on the phantom CT source domain (supervised, which is enough to give the
encoder source-domain knowledge for PAKD/DKD to measure a gap against), and keep only its
encoder, in the same checkpoint format as `weights_port` writes. It is cached under
`cache_dir`, keyed by every setting that changes it, so a sweep trains it once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import jax

from assft_jax import atomic, engine, models
from assft_jax import config as config_lib
from assft_jax import data as data_lib

log = logging.getLogger("assft_jax.pretrain")

HARD_FRACTION = 0.15  # the phantom's default share of hard cases
N_HELD_OUT = 16  # unseen CT phantoms on which the source network's Dice is reported


def ensure_phantom(
  cache: Path,
  domain: str,
  n: int,
  shape: Sequence[int],
  seed: int,
  hard_fraction: float = HARD_FRACTION,
  shares: Sequence[float] | None = None,
) -> Path:
  """The phantom dataset for these settings, generated once into the cache (atomically)."""
  from assft_jax.data import phantom

  # The generator version is in the key: a changed phantom never reuses old data. The
  # benchmark's own shares and hard fraction extend the name only when set, so the
  # caches of the default phantom keep their names.
  name = f"phantom_{domain}_v{phantom.VERSION}_n{n}_{'x'.join(map(str, shape))}_s{seed}"
  if hard_fraction != HARD_FRACTION:
    name += f"_h{hard_fraction:g}"
  if shares is not None:
    name += "_sh" + "-".join(f"{x:g}" for x in shares)
  out = Path(cache) / name
  if (out / "dataset.json").exists():
    return out
  with atomic.atomic_dir(out, replace=False) as tmp:  # keyed by its settings
    phantom.generate(
      tmp, domain, n, tuple(shape), seed, hard_fraction=hard_fraction, scanner_shares=shares
    )
  return out


# Bumped when the source pretraining's code changes what it trains (its key sees settings).
SOURCE_VERSION = 2


def source_key(cfg: config_lib.RunConfig) -> str:
  """The cache folder name of cfg's source encoder: its model, phantom and source settings
  and the conv kernel that trains it (kernels differ in float32 rounding, which thousands
  of steps carry into the weights)."""
  from assft_jax.data import phantom

  m, d = cfg.model, cfg.data
  return (
    f"source_encoder_{SOURCE_VERSION}_v{phantom.VERSION}_f{m.init_filters}"
    f"_b{''.join(map(str, m.blocks_down))}_{m.norm}_k{m.conv_impl}"
    f"_{'x'.join(map(str, d.phantom_shape))}_n{d.phantom_n}_t{m.source_steps}"
    f"_lr{m.source_lr:g}_p{'x'.join(map(str, cfg.train.patch))}_bs{cfg.train.batch_size}"
    f"_s{d.phantom_seed}"
  )


def ensure_source_encoder(cfg: config_lib.RunConfig) -> Path:
  """The cached source encoder for cfg's model and phantom settings (trained if absent)."""
  out = cfg.cache / source_key(cfg)
  if (out / "model.json").exists():
    return out
  log.info("pre-training the phantom source encoder into %s", out)
  return pretrain_source(cfg, out)


def pretrain_source(cfg: config_lib.RunConfig, out_dir: Path) -> Path:
  """Trains SegResNetDS on the phantom CT source and saves its encoder to `out_dir`.

  Uses cfg's model (init_filters, blocks_down, norm, conv_impl), phantom (n, shape,
  seed), source (source_steps, source_lr) and training (patch, batch_size) settings;
  phantom data and preprocessed arrays go to cfg.cache.
  """
  m, d, t = cfg.model, cfg.data, cfg.train
  steps = m.source_steps
  # A seed offset keeps source cases distinct from any target phantom with the same seed.
  root = ensure_phantom(cfg.cache, "ct", d.phantom_n, d.phantom_shape, d.phantom_seed + 1000)
  dataset = data_lib.load_index(root)
  volumes = data_lib.prepare(dataset, data_lib.PreprocessConfig(), cfg.cache / "preprocessed")
  num_classes = len(dataset.class_names)
  module = models.SegResNetDS(
    init_filters=m.init_filters,
    out_channels=num_classes,
    blocks_down=m.blocks_down,
    norm=m.norm,
    conv_impl=m.conv_impl,
  )
  variables = models.init_variables(module, jax.random.PRNGKey(d.phantom_seed), t.patch)
  tx = engine.make_optimizer(m.source_lr, steps)
  mesh = engine.make_mesh(
    jax.local_devices()[:1] if t.batch_size % jax.local_device_count() else jax.local_devices()
  )
  step = engine.make_train_step(module, tx, mesh, num_classes, augment_cfg=data_lib.AugmentConfig())
  loader = data_lib.make_loader(
    volumes, list(dataset.ids), t.patch, t.batch_size, d.phantom_seed, num_batches=steps
  )
  state = engine.create_state(variables, tx)
  state, history = engine.fine_tune(
    state,
    step,
    loader,
    1,
    steps,
    jax.random.PRNGKey(d.phantom_seed),
    desc="source pretrain",
    progress=False,
  )
  v = jax.device_get(engine.variables_of(state))
  held_out = _held_out_dice(cfg, module, v, num_classes)
  enc_vars = {coll: v[coll]["encoder"] for coll in v}
  enc_module = models.SegResEncoder(
    init_filters=m.init_filters, blocks_down=m.blocks_down, norm=m.norm, conv_impl=m.conv_impl
  )
  # One folder swapped in whole, the first writer winning: two cells pretraining the same
  # encoder into the shared cache do not race, and a kill never leaves a model without
  # its source.json.
  with atomic.atomic_dir(out_dir, replace=False) as tmp:
    models.save_pretrained(tmp, models.model_config(enc_module), enc_vars)
    atomic.write_json(
      tmp / "source.json",
      {
        "phantom": str(root),
        "steps": steps,
        "final_loss": history[-1]["loss"],
        "final_dice": history[-1]["dice"],
        "held_out": held_out,
      },
    )
  log.info(
    "source encoder: loss %.4f, batch Dice %.3f after %d steps; held-out CT Dice %.3f (n=%d)",
    history[-1]["loss"],
    history[-1]["dice"],
    steps,
    held_out["dice_mean"],
    held_out["n_cases"],
  )
  return Path(out_dir)


def _held_out_dice(cfg: config_lib.RunConfig, module, variables, num_classes: int) -> dict:
  """Test Dice of the whole source network on unseen CT phantoms (another generator seed):
  how well the stand-in for CT-FM knows its source domain, which is what DKD measures
  a gap against. N_HELD_OUT cases; the batch Dice of training overstates it."""
  d, t = cfg.data, cfg.train
  root = ensure_phantom(cfg.cache, "ct", N_HELD_OUT, d.phantom_shape, d.phantom_seed + 2000)
  dataset = data_lib.load_index(root)
  volumes = data_lib.prepare(dataset, data_lib.PreprocessConfig(), cfg.cache / "preprocessed")
  res = engine.evaluate(
    module,
    variables,
    volumes,
    list(dataset.ids),
    roi=t.patch,
    sw_batch_size=t.sw_batch_size,
    num_classes=num_classes,
    class_names=dataset.class_names,
  )
  return {
    "phantom": str(root),
    "n_cases": res["n_cases"],
    "dice_mean": res["mean"],
    "dice_sd": res["sd"],
    "per_class": res["per_class"],
  }
