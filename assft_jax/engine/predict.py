"""Predictions of a sliding-window pass, one case at a time: hard argmax labels for
pseudo-labels (the current model's hard argmax) and the test-split evaluation, and
`Prediction` (labels, voxel entropy, optionally the softmax) for the predict command and
the annotators' pre-annotations."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from assft_jax.engine import timing
from assft_jax.engine.infer import image_of, sliding_window_predict
from assft_jax.scoring.kernels import entropy_map


class Prediction(NamedTuple):
  """One case on its preprocessed grid.

  labels:  [D, H, W] int32, argmax of the blended logits.
  entropy: [D, H, W] float32, voxel entropy of the softmax in nats (0 .. ln C), the
           same map the entropy strategies average (`scoring.kernels.entropy_map`).
  probs:   [D, H, W, C] float32 softmax over C, or None when not asked for.
  """

  labels: np.ndarray
  entropy: np.ndarray
  probs: np.ndarray | None


@timing.jit
def _summaries(logits: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  probs = jax.nn.softmax(logits, axis=-1)
  return jnp.argmax(logits, axis=-1).astype(jnp.int32), entropy_map(probs), probs


def from_logits(logits: jax.Array | np.ndarray, probabilities: bool = False) -> Prediction:
  """logits [D, H, W, C] -> Prediction (probs kept only with `probabilities`)."""
  labels, entropy, probs = _summaries(jnp.asarray(logits, jnp.float32))
  return Prediction(
    np.asarray(labels),
    np.asarray(entropy, np.float32),
    np.asarray(probs, np.float32) if probabilities else None,
  )


def _iter_logits(module, variables, volumes, ids, sw: dict) -> Iterator[tuple[str, jax.Array]]:
  for cid in ids:
    yield cid, sliding_window_predict(module, variables, image_of(volumes[cid]), **sw)


def iter_outputs(
  module: nn.Module,
  variables: Any,
  volumes: Mapping[str, Any],
  ids: Sequence[str],
  *,
  roi: int | Sequence[int],
  overlap: float = 0.5,
  mode: str = "gaussian",
  sw_batch_size: int = 4,
  probabilities: bool = False,
) -> Iterator[tuple[str, Prediction]]:
  """Yields (id, Prediction), one case at a time (volumes as in `iter_predictions`)."""
  sw = dict(roi=roi, overlap=overlap, mode=mode, sw_batch_size=sw_batch_size)
  for cid, logits in _iter_logits(module, variables, volumes, ids, sw):
    yield cid, from_logits(logits, probabilities)


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
  sw = dict(roi=roi, overlap=overlap, mode=mode, sw_batch_size=sw_batch_size)
  for cid, logits in _iter_logits(module, variables, volumes, ids, sw):
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
