"""The compile clock (`timing.jit`: traced calls timed, traces counted) and the phase timer."""

import jax.numpy as jnp
import pytest

from assft_jax.engine import timing


def test_a_new_signature_is_counted_and_timed_and_a_cached_call_is_not():
  f = timing.jit(lambda x: jnp.sin(x) * 3.0 + 1.0)
  x = jnp.arange(7.0)
  y = (x + 1).block_until_ready()  # an eager op compiles too: before the clock is read
  c0 = timing.compile_seconds()
  f(x).block_until_ready()
  c1 = timing.compile_seconds()
  assert c1 > c0 and f.traces() == 1
  f(y).block_until_ready()  # same shape and dtype: the executable is reused
  assert timing.compile_seconds() == c1 and f.traces() == 1
  f(jnp.arange(3.0)).block_until_ready()  # a new shape: a second trace
  assert timing.compile_seconds() > c1 and f.traces() == 2


def test_static_arguments_and_nested_calls_are_counted_once_each():
  inner = timing.jit(lambda x, k: x * k, static_argnums=(1,))
  outer = timing.jit(lambda x: inner(x, 2) + 1.0)
  x = jnp.ones(4)
  assert float(outer(x)[0]) == 3.0
  assert outer.traces() == 1 and inner.traces() == 1  # inner traced inside outer's trace
  inner(x, 3)
  assert inner.traces() == 2  # another static value
  inner(x, 3)
  outer(x)
  assert inner.traces() == 2 and outer.traces() == 1


def test_phase_timer_and_unknown_phase():
  t = timing.Timing()
  with t.phase("train_s"):
    sum(range(10000))
  d = t.as_dict()
  assert d["train_s"] > 0 and d["score_s"] == 0.0 and d["total_s"] >= d["train_s"]
  with pytest.raises(ValueError, match="unknown phase"):
    with t.phase("nap_s"):
      pass
