"""Median wall time after warm-up; the one timer every benchmark section uses."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def block(x: Any) -> Any:
  """Waits for JAX arrays (and torch is synchronous on CPU); returns x."""
  try:
    import jax

    jax.block_until_ready(x)
  except Exception:  # not a JAX pytree: nothing to wait for
    pass
  return x


def median_time(fn: Callable[[], Any], warmup: int = 2, repeats: int = 5) -> float:
  """Median seconds of `fn()` over `repeats` calls after `warmup` calls."""
  for _ in range(warmup):
    block(fn())
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    block(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def row(
  name: str, jax_s: float, ref: str | None = None, ref_s: float | None = None, **extra
) -> dict:
  """One table row; `ratio` is JAX time / reference time (lower is better)."""
  r = {"name": name, "jax_s": jax_s}
  if ref is not None and ref_s is not None:
    r.update(ref=ref, ref_s=ref_s, ratio=jax_s / ref_s)
  r.update(extra)
  return r
