"""Pre-trains the phantom source-domain encoder (the stand-in for CT-FM), as a run would.

  python -m experiments.pretrain --flagfile=experiments/flags/demo.flags --out=runs/source_encoder

Takes the run's flags, flagfiles and defaults, and trains exactly the encoder that a run
with the same flags and no --pretrained trains and caches: --init_filters, --blocks_down,
--norm, --conv_impl, --source_steps, --source_lr, --phantom_n, --phantom_shape,
--phantom_seed, --patch and --batch_size set it; the other run flags are checked but
unused. --workdir is not needed: the phantom source data goes to --cache_dir, by default
WORKDIR/cache, or OUT/../cache without --workdir.

Writes the same checkpoint format as `python -m weights_port.convert`, so the result is
passed to a run as `--pretrained=runs/source_encoder`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from absl import app, flags

from assft_jax import config as config_lib
from assft_jax import errors
from assft_jax import flags as run_flags

run_flags.define_flags()
flags.DEFINE_string(
  "out", None, "Output directory of the encoder (weights_port checkpoint format)."
)
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.getLogger("assft_jax").setLevel(logging.INFO)
  with errors.cli_errors():
    if not FLAGS.out:
      raise config_lib.ConfigError("--out is required (where the encoder is written)")
    out = Path(FLAGS.out)
    cfg = run_flags.config_from_flags(FLAGS, default_workdir=str(out.parent))
    if cfg.model.pretrained:
      raise config_lib.ConfigError(
        f"--pretrained={cfg.model.pretrained}: experiments.pretrain trains the phantom "
        "source encoder; it starts from no pretrained network"
      )
    from assft_jax import pretrain  # after flag parsing: keeps `--help` fast

    pretrain.pretrain_source(cfg, out)
    print(f"source encoder written to {out}")


if __name__ == "__main__":
  app.run(main)
