"""CT-FM networks (Flax SegResNetDS / SegResEncoder) and the one checkpoint format.

`load_pretrained(dir)` is the single loading path for ported CT-FM weights, the phantom
pretraining output and any fine-tuned model saved with `save_pretrained`.
"""

from assft_jax.models.checkpoint import (
  CheckpointError,
  load_pretrained,
  read_config,
  save_pretrained,
)
from assft_jax.models.segresnet import (
  SegResBlock,
  SegResEncoder,
  SegResNetDS,
  abstract_variables,
  build_model,
  check_spatial,
  init_variables,
  model_config,
)

__all__ = [
  "CheckpointError",
  "SegResBlock",
  "SegResEncoder",
  "SegResNetDS",
  "abstract_variables",
  "build_model",
  "check_spatial",
  "init_variables",
  "load_pretrained",
  "model_config",
  "read_config",
  "save_pretrained",
]
