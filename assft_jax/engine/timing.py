"""Where a run's wall time goes: seconds per phase and XLA compile time.

Compile time is read from JAX's own monitoring events (`jax.monitoring` time spans of
tracing, lowering to MLIR and the backend compile, which includes a persistent-cache
read on a hit). Those spans nest (a jit traced inside another's trace fires its own
event inside the outer one), so the compile clock is the length of their UNION, not the
sum. It is a part of the phase that first called the new function: `compile_s` overlaps
`train_s`, `score_s`, ... rather than adding to them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from jax import monitoring

# The three stages of a jit cache miss (jax._src.dispatch's event names).
COMPILE_EVENTS = (
  "/jax/core/compile/jaxpr_trace_duration",
  "/jax/core/compile/jaxpr_to_mlir_module_duration",
  "/jax/core/compile/backend_compile_duration",
)
PHASES = ("train_s", "score_s", "predict_s", "evaluate_s")


class _CompileClock:
  """Union of the compile spans seen in this process: disjoint, sorted (start, end)."""

  def __init__(self):
    self.spans: list[tuple[float, float]] = []
    self.lock = threading.Lock()

  def __call__(self, event: str, start: float, end: float, **_) -> None:
    if event not in COMPILE_EVENTS:
      return
    with self.lock:  # a few hundred spans per run: a linear merge is plenty
      apart = [s for s in self.spans if s[1] < start or s[0] > end]
      touching = [s for s in self.spans if not (s[1] < start or s[0] > end)]
      lo = min([start] + [s[0] for s in touching])
      hi = max([end] + [s[1] for s in touching])
      self.spans = sorted([*apart, (lo, hi)])

  def seconds(self) -> float:
    with self.lock:
      return sum(e - s for s, e in self.spans)


_clock = _CompileClock()
monitoring.register_event_time_span_listener(_clock)


def compile_seconds() -> float:
  """Seconds this process has spent compiling so far (union of the compile spans)."""
  return _clock.seconds()


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
