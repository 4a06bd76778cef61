"""What a person opens in a viewer: a prediction's files in the SOURCE scan's grid and
affine (they overlay the scan in 3D Slicer or ITK-SNAP), and a color table naming each
class.

Files of one case (`write_case`): the labels (nearest-neighbour back to the source grid,
the evaluation's own path, `data.io.save_prediction`), the voxel entropy of the softmax
as float32 (linear back, 0 outside the crop), and optionally the class probabilities as
a 4D float32 NIfTI (linear back, per class).

The color table is 3D Slicer's text format, `labels.ctbl`: a `# Color table file` header,
then one line `index name R G B A` per class (spaces in names become underscores, as the
format wants). Slicer loads it with "Add data"; as the color node of the label map it
names each segment. Background is transparent.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from assft_jax import atomic
from assft_jax.data import io as data_io
from assft_jax.engine.predict import Prediction

COLOR_TABLE = "labels.ctbl"

# matplotlib's tab20 order (strong colors first, then their light versions): neighbours
# in the class list stay distinguishable; past 20 classes the colors repeat.
_PALETTE = (
  (31, 119, 180),
  (255, 127, 14),
  (44, 160, 44),
  (214, 39, 40),
  (148, 103, 189),
  (140, 86, 75),
  (227, 119, 194),
  (127, 127, 127),
  (188, 189, 34),
  (23, 190, 207),
  (174, 199, 232),
  (255, 187, 120),
  (152, 223, 138),
  (255, 152, 150),
  (197, 176, 213),
  (196, 156, 148),
  (247, 182, 210),
  (199, 199, 199),
  (219, 219, 141),
  (158, 218, 229),
)


def color_table(class_names: Sequence[str]) -> str:
  """The `.ctbl` text of class_names (index = the label value; 0 is background)."""
  lines = [f"# Color table file {COLOR_TABLE}", f"# {len(class_names)} values"]
  for k, name in enumerate(class_names):
    r, g, b = (0, 0, 0) if k == 0 else _PALETTE[(k - 1) % len(_PALETTE)]
    lines.append(f"{k} {'_'.join(str(name).split())} {r} {g} {b} {0 if k == 0 else 255}")
  return "\n".join(lines) + "\n"


def write_color_table(path: str | os.PathLike, class_names: Sequence[str]) -> Path:
  atomic.write_text(path, color_table(class_names))
  return Path(path)


def write_case(
  pred: Prediction,
  meta: dict,
  *,
  label: str | os.PathLike | None = None,
  uncertainty: str | os.PathLike | None = None,
  probabilities: str | os.PathLike | None = None,
) -> list[Path]:
  """Writes the given files of one case (each atomically) in the source grid of `meta`
  (a `data.Volume`'s meta); probabilities need `pred.probs`. Returns the paths written."""
  out = []
  if label is not None:
    out.append(data_io.save_prediction(pred.labels, meta, label))
  if uncertainty is not None:
    out.append(data_io.save_map(pred.entropy, meta, uncertainty))
  if probabilities is not None:
    if pred.probs is None:
      raise ValueError("probabilities asked for, but the prediction holds none")
    out.append(data_io.save_probabilities(pred.probs, meta, probabilities))
  return out
