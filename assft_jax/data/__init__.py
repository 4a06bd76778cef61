"""Data layer: dataset index, validation, NIfTI IO, preprocessing (cached), on-device
augmentation, grain patch loader, and the built-in phantom benchmark."""

from .datasets import Case, Dataset, case_groups, load_index, table_groups
from .errors import DataError
from .io import load_volume, save_prediction
from .preprocess import PreprocessConfig, Volume, prepare, prepare_label

__all__ = [
  "Case",
  "Dataset",
  "DataError",
  "case_groups",
  "table_groups",
  "PreprocessConfig",
  "Volume",
  "load_index",
  "load_volume",
  "make_loader",
  "prepare",
  "prepare_label",
  "save_prediction",
]


def __getattr__(name):
  # grain and jax are imported only when the loader / augmentation is used.
  if name == "make_loader":
    from .loader import make_loader

    return make_loader
  if name in ("AugmentConfig", "augment_batch"):
    from . import augment

    return getattr(augment, name)
  raise AttributeError(name)
