"""`python -m experiments.predict`: a run's adapted model segments new scans.

The model is a run's workdir (its last completed round) or one round's `round_XXX[/model]`.
Everything else comes from the run's config.json, so the user repeats no flag: the
preprocessing (`components.preprocess_config`: orientation, spacing, intensity pipeline,
crop) and the sliding window (`components.window_settings`: the training patch, its batch).

Per input file `<id>.nii[.gz]` (unlabeled scans are fine), into the output folder:
  <id>.nii.gz                 labels in the scan's own grid and affine
  <id>_uncertainty.nii.gz     --uncertainty: voxel entropy of the softmax (nats), float32
  <id>_probabilities.nii.gz   --save_probabilities: 4D float32 [X, Y, Z, C], the softmax
  labels.ctbl                 the class names and colors (`viewer.color_table`)
The probabilities are a 4D NIfTI rather than an npz: the file carries its own affine,
nibabel reads it and viewers open it as one volume per class.

Every file is checked before any prediction: an existing one (other than an identical
color table) is only replaced with `overwrite`, and an input is never an output. A bad
input (unreadable, 4D, NaN...) costs one line naming it; the other files still run.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from tqdm.auto import tqdm

from assft_jax import components, models, viewer
from assft_jax import workdir as wd_lib
from assft_jax.data import Case, DataError, Dataset, PreprocessConfig
from assft_jax.data.datasets import NII, strip_nii
from assft_jax.data.preprocess import preprocess_case
from assft_jax.engine.infer import sliding_window_predict
from assft_jax.engine.predict import Prediction, from_logits
from assft_jax.errors import AssftError

UNCERTAINTY = "_uncertainty.nii.gz"
PROBABILITIES = "_probabilities.nii.gz"


class PredictError(AssftError, ValueError):
  """The predict command cannot run as asked, or some inputs failed (named above it)."""


@dataclasses.dataclass(frozen=True)
class Predictor:
  """A run's network with the preprocessing and window it was trained with."""

  module: Any
  variables: Any
  pcfg: PreprocessConfig
  class_names: tuple[str, ...]
  window: dict  # sliding_window_predict's roi and sw_batch_size

  def __call__(self, image: np.ndarray, probabilities: bool = False) -> Prediction:
    """image [D, H, W, 1] preprocessed -> Prediction on the same grid."""
    logits = sliding_window_predict(self.module, self.variables, image, **self.window)
    return from_logits(logits, probabilities)


@dataclasses.dataclass(frozen=True)
class Report:
  written: dict[str, list[Path]]  # case id -> the files written
  failed: dict[str, str]  # case id -> the one line that names the file and the problem


def resolve_model(model: str | Path) -> tuple[Path, Path]:
  """(workdir, model dir) of `--model`: WORKDIR (its last DONE round), WORKDIR/round_XXX
  or WORKDIR/round_XXX/model."""
  path = Path(model)
  if (path / "config.json").is_file():
    done = wd_lib.last_done_round(path)
    if done is None:
      raise PredictError(f"--model={model}: the run has no completed round yet")
    return path, wd_lib.model_dir(path, done)
  rd = path.parent if path.name == "model" else path
  if rd.name.startswith("round_") and (rd.parent / "config.json").is_file():
    if not (rd / "model" / "model.json").is_file():
      raise PredictError(f"--model={model}: {rd.name} holds no saved model")
    return rd.parent, rd / "model"
  raise PredictError(
    f"--model={model}: not a run's workdir (no config.json) nor WORKDIR/round_XXX[/model]"
  )


def load_predictor(model: str | Path) -> Predictor:
  """The Predictor of `--model` (see resolve_model)."""
  workdir, mdir = resolve_model(model)
  cfg = wd_lib.read_config(workdir)
  # The conv kernel of this machine, not the run's: a model adapted on a CPU with oneDNN
  # segments scans on a GPU. Kernels differ only in float32 rounding, which a prediction
  # of new scans may carry (a run's own evidence records and holds its kernel).
  module, variables = models.load_pretrained(mdir, conv_impl="auto")
  if not isinstance(module, models.SegResNetDS):
    raise PredictError(f"--model={model}: {mdir} is an encoder without a segmentation head")
  return Predictor(
    module,
    variables,
    components.preprocess_config(cfg),
    class_names(workdir, module.out_channels),
    components.window_settings(cfg),
  )


def class_names(workdir: Path, n: int) -> tuple[str, ...]:
  """The run's n class names (summary.json lists the foreground ones); class_<k> when
  the summary is missing or disagrees with the network's n outputs."""
  fg = (wd_lib.read_json(Path(workdir) / "summary.json") or {}).get("class_names")
  if isinstance(fg, list) and len(fg) == n - 1:
    return ("background", *map(str, fg))
  return ("background", *(f"class_{k}" for k in range(1, n)))


def input_files(path: str | Path) -> list[Case]:
  """The scans of `--input` (one NIfTI, or a folder's *.nii.gz and *.nii), as unlabeled
  cases; case id = the file name without its extension."""
  path = Path(path)
  if path.is_dir():
    files = sorted(p for p in path.iterdir() if p.name.endswith(NII) and p.name[0] != ".")
    if not files:
      raise PredictError(f"--input={path}: no *.nii.gz or *.nii files in the folder")
  elif path.is_file() and path.name.endswith(NII):
    files = [path]
  else:
    raise PredictError(f"--input={path}: not a NIfTI file (.nii.gz, .nii) nor a folder")
  cases = [Case(strip_nii(p.name), p, None) for p in files]
  seen: dict[str, Path] = {}
  for c in cases:
    if c.id in seen:
      raise PredictError(f"--input: {c.image} and {seen[c.id]} give the same case id {c.id!r}")
    seen[c.id] = c.image
  return cases


def output_paths(
  out_dir: Path, cid: str, uncertainty: bool, probabilities: bool
) -> dict[str, Path]:
  """viewer.write_case's keyword -> path, for the files asked for."""
  paths = {"label": out_dir / f"{cid}.nii.gz"}
  if uncertainty:
    paths["uncertainty"] = out_dir / f"{cid}{UNCERTAINTY}"
  if probabilities:
    paths["probabilities"] = out_dir / f"{cid}{PROBABILITIES}"
  return paths


def predict_files(
  predictor: Predictor,
  cases: Sequence[Case],
  out_dir: str | Path,
  *,
  uncertainty: bool = False,
  probabilities: bool = False,
  overwrite: bool = False,
  progress: bool = False,
  log: TextIO | None = None,
) -> Report:
  """Predicts each case into `out_dir` (see the module docstring); one line per failed
  input goes to `log` (default stderr) as it happens. Raises PredictError before any
  work when a file would be overwritten without `overwrite`, or an input is an output."""
  out_dir = Path(out_dir)
  plan = {c.id: output_paths(out_dir, c.id, uncertainty, probabilities) for c in cases}
  table = out_dir / viewer.COLOR_TABLE
  _check_outputs(plan, cases, table, predictor.class_names, overwrite)
  out_dir.mkdir(parents=True, exist_ok=True)
  viewer.write_color_table(table, predictor.class_names)
  # The inputs as a Dataset of unlabeled cases, so preprocessing is the run's own code.
  root = Path(cases[0].image).parent if cases else out_dir
  dataset = Dataset(tuple(cases), predictor.class_names, "unknown", root, "generic")
  written, failed = {}, {}
  for case in tqdm(cases, desc="predict", unit="case", disable=not progress, file=sys.stderr):
    try:
      image, _, meta = preprocess_case(case, predictor.pcfg, dataset)
    except DataError as e:
      failed[case.id] = "; ".join(e.problems)
      tqdm.write(f"error: {failed[case.id]}", file=log or sys.stderr)
      continue
    pred = predictor(image, probabilities)
    written[case.id] = viewer.write_case(pred, meta, **plan[case.id])
  return Report(written, failed)


def _check_outputs(plan, cases, table: Path, names, overwrite: bool) -> None:
  targets = [p for paths in plan.values() for p in paths.values()]
  inputs = {Path(c.image).resolve() for c in cases}
  clash = [str(p) for p in targets if p.resolve() in inputs]
  if clash:
    raise PredictError(f"--output: would write over input file(s): {', '.join(clash)}")
  if overwrite:
    return
  exist = [str(p) for p in targets if p.exists()]
  if table.exists() and table.read_text() != viewer.color_table(names):
    exist.append(str(table))
  if exist:
    raise PredictError(
      f"--output: {len(exist)} file(s) exist (use --overwrite to replace them): "
      + ", ".join(exist[:10])
      + (" ..." if len(exist) > 10 else "")
    )


def run(
  model: str | Path,
  input_path: str | Path,
  out_dir: str | Path,
  *,
  uncertainty: bool = False,
  probabilities: bool = False,
  overwrite: bool = False,
  progress: bool = False,
) -> Report:
  """The predict command: the inputs are listed before the model loads, and the outputs
  checked before any prediction."""
  cases = input_files(input_path)
  predictor = load_predictor(model)
  return predict_files(
    predictor,
    cases,
    out_dir,
    uncertainty=uncertainty,
    probabilities=probabilities,
    overwrite=overwrite,
    progress=progress,
  )
