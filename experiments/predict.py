"""Segments new scans with a run's adapted model, each in its own grid and affine.

  python -m experiments.predict --model=runs/demo/assft --input=scans/ --output=preds/ \
      [--uncertainty] [--save_probabilities] [--overwrite]

--model is a run's workdir (its last completed round) or WORKDIR/round_XXX[/model]; the
preprocessing and the sliding window come from the run's config.json. Writes <id>.nii.gz
per input scan, labels.ctbl (the class names, a 3D Slicer color table), and with the
flags <id>_uncertainty.nii.gz (voxel entropy, float32) and <id>_probabilities.nii.gz
(4D float32). See assft_jax/deploy/predict.py.

Exit codes: 0 every scan written; 1 a clear error, or some scans failed (one line each;
the others are written).
"""

from __future__ import annotations

from absl import app, flags
from absl import logging as absl_logging

from assft_jax import errors

flags.DEFINE_string("model", None, "A run's workdir, or WORKDIR/round_XXX[/model].")
flags.DEFINE_string("input", None, "A NIfTI scan, or a folder of *.nii.gz / *.nii scans.")
flags.DEFINE_string("output", None, "Folder for the predictions (created).")
flags.DEFINE_bool("uncertainty", False, "Also write <id>_uncertainty.nii.gz (voxel entropy).")
flags.DEFINE_bool(
  "save_probabilities", False, "Also write <id>_probabilities.nii.gz (4D, one volume a class)."
)
flags.DEFINE_bool("overwrite", False, "Replace existing output files.")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  absl_logging.set_verbosity(absl_logging.WARNING)  # no orbax chatter on restore
  with errors.cli_errors():
    from assft_jax.deploy import predict  # after flag parsing: keeps `--help` fast

    for name in ("model", "input", "output"):
      if not FLAGS[name].value:
        raise predict.PredictError(f"--{name} is required")
    report = predict.run(
      FLAGS.model,
      FLAGS.input,
      FLAGS.output,
      uncertainty=FLAGS.uncertainty,
      probabilities=FLAGS.save_probabilities,
      overwrite=FLAGS.overwrite,
      progress=True,
    )
    n = len(report.written) + len(report.failed)
    if report.failed:
      raise predict.PredictError(
        f"{len(report.failed)} of {n} scan(s) failed (named above); "
        f"{len(report.written)} written to {FLAGS.output}"
      )
    print(f"{n} scan(s) written to {FLAGS.output}")


if __name__ == "__main__":
  app.run(main)
