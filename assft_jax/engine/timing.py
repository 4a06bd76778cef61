"""Where a run's wall time goes: seconds per phase and XLA compile time.

The engine's jitted functions are made with `jit` below: `jax.jit` whose calls that trace
(a new input signature, so a compile or a read of the persistent compilation cache) are
timed, and whose `traces()` counts those traces. Public API only: a trace is seen as the
Python side effect of running the function's body, which jax does once per signature.
With asynchronous dispatch such a call returns once the executable is built and its
work queued, so its wall time is the compile's. Only the outermost of nested calls is
timed. jax reuses a trace made inside another function's trace, so a function first
traced there and then called on its own compiles unseen; the engine's top-level
functions are not called inside one another. `compile_s` is a part of the phase that first called the new function: it
overlaps `train_s`, `score_s`, ... rather than adding to them.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax

PHASES = ("train_s", "score_s", "predict_s", "evaluate_s")

_seconds = [0.0]  # compile seconds of this process so far
_local = threading.local()  # .busy: inside a timed call (nested calls are not timed)


def jit(fn: Callable, **jit_kwargs: Any) -> Callable:
  """`jax.jit(fn, **jit_kwargs)` with its tracing calls timed into `compile_seconds`; the
  result's `traces()` is the number of signatures it has traced (its compilations)."""
  count = [0]

  @functools.wraps(fn)
  def body(*args, **kwargs):
    count[0] += 1  # runs once per trace, never when a compiled executable is reused
    return fn(*args, **kwargs)

  jitted = jax.jit(body, **jit_kwargs)

  @functools.wraps(fn)
  def call(*args, **kwargs):
    if getattr(_local, "busy", False):
      return jitted(*args, **kwargs)
    before, t0 = count[0], time.perf_counter()
    _local.busy = True
    try:
      return jitted(*args, **kwargs)
    finally:
      _local.busy = False
      if count[0] != before:
        _seconds[0] += time.perf_counter() - t0

  call.traces = lambda: count[0]
  call.lower = jitted.lower
  return call


def compile_seconds() -> float:
  """Seconds this process has spent in calls of `jit` functions that traced."""
  return _seconds[0]


class Timing:
  """Seconds per phase of one Session, from its creation on.

  `with timing.phase("score_s"): ...` adds the block's wall time; `as_dict()` gives
  {compile_s, train_s, score_s, predict_s, evaluate_s, total_s}.
  """

  def __init__(self):
    self._t0 = time.perf_counter()
    self._c0 = compile_seconds()
    self._s = dict.fromkeys(PHASES, 0.0)
    self._earlier: dict[str, float] = {}

  def carry(self, earlier: dict[str, float]) -> None:
    """Adds an earlier process's seconds of the same run (a resumed run's summary)."""
    self._earlier = {k: float(v) for k, v in earlier.items()}

  @contextlib.contextmanager
  def phase(self, name: str) -> Iterator[None]:
    if name not in self._s:
      raise ValueError(f"unknown phase {name!r}; one of {PHASES}")
    t = time.perf_counter()
    try:
      yield
    finally:
      self._s[name] += time.perf_counter() - t

  def as_dict(self) -> dict[str, float]:
    now = {
      "compile_s": compile_seconds() - self._c0,
      **self._s,
      "total_s": time.perf_counter() - self._t0,
    }
    return {k: v + self._earlier.get(k, 0.0) for k, v in now.items()}
