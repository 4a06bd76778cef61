"""Hard predictions: per-case argmax labels of a sliding-window pass, for pseudo-labels
(DESIGN §2: hard argmax of the current model) and for the test-split evaluation."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from assft_jax.engine.infer import image_of, sliding_window_predict


def iter_predictions(
  module: nn.Module,
  variables: Any,
  volumes: Mapping[str, Any],
  ids: Sequence[str],
  *,
  roi: int | Sequence[int],
  overlap: float = 0.5,
  mode: str = "gaussian",
  sw_batch_size: int = 4,
) -> Iterator[tuple[str, np.ndarray]]:
  """Yields (id, argmax labels [D, H, W] int32), one case at a time.

  volumes: id -> `data.Volume` or image [D, H, W, Cin].
  """
  for cid in ids:
    logits = sliding_window_predict(
      module,
      variables,
      image_of(volumes[cid]),
      roi,
      overlap=overlap,
      mode=mode,
      sw_batch_size=sw_batch_size,
    )
    yield cid, np.asarray(jnp.argmax(logits, axis=-1).astype(jnp.int32))


def predict_labels(
  module: nn.Module,
  variables: Any,
  volumes: Mapping[str, Any],
  ids: Sequence[str],
  *,
  roi: int | Sequence[int],
  overlap: float = 0.5,
  mode: str = "gaussian",
  sw_batch_size: int = 4,
) -> dict[str, np.ndarray]:
  """{id: argmax labels [D, H, W] int32} of `ids` (all held in memory at once)."""
  return dict(
    iter_predictions(
      module,
      variables,
      volumes,
      ids,
      roi=roi,
      overlap=overlap,
      mode=mode,
      sw_batch_size=sw_batch_size,
    )
  )
