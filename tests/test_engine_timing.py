"""The compile clock (union of nested compile spans) and the phase timer."""

import jax
import jax.numpy as jnp
import pytest

from assft_jax.engine import timing


def test_compile_clock_is_the_union_of_spans():
  """Spans (event order = end order, as JAX fires them): an inner trace [1, 2] inside the
  outer [0, 5], a backend compile [4, 7] overlapping it, a separate [10, 11], and an
  event of another kind [20, 30] that is not a compile. Union: [0, 7] + [10, 11] = 8 s
  (the plain sum of the compile spans would be 1 + 5 + 3 + 1 = 10)."""
  clock = timing._CompileClock()
  trace, lower, backend = timing.COMPILE_EVENTS
  clock(trace, 1.0, 2.0)
  clock(trace, 0.0, 5.0)
  clock(backend, 4.0, 7.0)
  clock(lower, 10.0, 11.0)
  clock("/jax/checkpoint/write", 20.0, 30.0)
  assert clock.spans == [(0.0, 7.0), (10.0, 11.0)]
  assert clock.seconds() == pytest.approx(8.0)
  clock(backend, 6.5, 10.5)  # bridges the two
  assert clock.spans == [(0.0, 11.0)]


def test_a_new_jit_is_counted_and_a_cached_call_is_not():
  f = jax.jit(lambda x: jnp.sin(x) * 3.0 + 1.0)
  x = jnp.arange(7.0)
  y = x + 1  # an eager op compiles too: before the clock is read
  y.block_until_ready()
  c0 = timing.compile_seconds()
  f(x).block_until_ready()
  c1 = timing.compile_seconds()
  assert c1 > c0
  f(y).block_until_ready()  # same shapes: no new compile
  assert timing.compile_seconds() == c1


def test_phase_timer_and_unknown_phase():
  t = timing.Timing()
  with t.phase("train_s"):
    sum(range(10000))
  d = t.as_dict()
  assert d["train_s"] > 0 and d["score_s"] == 0.0 and d["total_s"] >= d["train_s"]
  with pytest.raises(ValueError, match="unknown phase"):
    with t.phase("nap_s"):
      pass
