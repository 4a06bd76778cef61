"""Pre-trains the phantom source-domain encoder (the stand-in for CT-FM).

  python -m experiments.pretrain --out=runs/source_encoder [--init_filters=8 ...]

Writes the same checkpoint format as `python -m weights_port.convert`, so the result is
passed to a run as `--pretrained=runs/source_encoder`. A run without --pretrained does
this itself once and caches the encoder in its --cache_dir.
"""

from __future__ import annotations

import logging
from pathlib import Path

from absl import app, flags

from assft_jax import errors

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Output directory (weights_port checkpoint format).")
flags.DEFINE_string("cache_dir", None, "Where the phantom source data goes; default OUT/../cache.")
flags.DEFINE_integer("init_filters", 8, "Encoder width.")
flags.DEFINE_list("blocks_down", ["1", "1", "1", "1"], "Blocks per encoder level.")
flags.DEFINE_enum("norm", "batch", ["batch", "instance", "group"], "Normalisation.")
flags.DEFINE_enum("conv_impl", "auto", ["auto", "native", "s2d"], "Conv implementation.")
flags.DEFINE_integer("n", 40, "Phantom source cases.")
flags.DEFINE_list("shape", ["32", "32", "32"], "Phantom volume D,H,W.")
flags.DEFINE_integer("seed", 0, "Phantom and training seed.")
flags.DEFINE_integer("steps", 150, "Training steps.")
flags.DEFINE_integer("batch_size", 2, "Batch size.")
flags.DEFINE_float("lr", 1e-3, "Peak learning rate.")


def main(argv):
  del argv
  logging.getLogger("assft_jax").setLevel(logging.INFO)
  with errors.cli_errors():
    if not FLAGS.out:
      raise ValueError("--out is required")
    from assft_jax import pretrain

    out = Path(FLAGS.out)
    shape = tuple(int(s) for s in FLAGS.shape)
    pretrain.pretrain_source(
      out,
      cache=Path(FLAGS.cache_dir) if FLAGS.cache_dir else out.parent / "cache",
      init_filters=FLAGS.init_filters,
      blocks_down=tuple(int(b) for b in FLAGS.blocks_down),
      norm=FLAGS.norm,
      conv_impl=FLAGS.conv_impl,
      n=FLAGS.n,
      shape=shape,
      seed=FLAGS.seed,
      steps=FLAGS.steps,
      patch=shape,
      batch_size=FLAGS.batch_size,
      lr=FLAGS.lr,
    )
    print(f"source encoder written to {out}")


if __name__ == "__main__":
  app.run(main)
