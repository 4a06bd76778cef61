"""The one timer of every benchmark section, and the statistics of its rows.

A row compares contenders ("jax" and a reference) timed round-robin: after a warm-up
call each (which also compiles), every repeat calls each contender once, so a change in
the machine's load hits all of them. A section measures every configuration in
`PASSES` passes (pass 1 over all its configurations, then pass 2; where a section
builds its models per configuration, a pass builds and compiles them anew), and `merge`
turns the passes into rows:
- jax_s / ref_s: the median over all passes' repeats; jax_min/jax_max, ref_min/ref_max;
- ratio = jax_s / ref_s (lower is better): the ratio of the medians;
- ratio_p1, ratio_p2 (each from jax_s_pK / ref_s_pK, that pass's medians) and
  spread = max - min of them: a change counts as a win only when it moves the ratio by
  more than that.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

REPEATS = 5  # timed calls of each contender per pass, after the warm-up
QUICK_REPEATS = 3  # the same under --quick
PASSES = 2


def repeats(quick: bool) -> int:
  return QUICK_REPEATS if quick else REPEATS


def block(x: Any) -> Any:
  """Waits for the JAX arrays in x (other leaves pass through; torch is synchronous on
  CPU); returns x. A computation that failed raises here: a bench must never time an
  error (a swallowed out-of-memory failure would pass for a very fast train step)."""
  import jax

  return jax.block_until_ready(x)


def interleaved(
  fns: Mapping[str, Callable[[], Any]],
  repeats: int = REPEATS,
  clock: Callable[[], float] = time.perf_counter,
) -> tuple[dict[str, list[float]], dict[str, float]]:
  """({name: seconds of each of the `repeats` timed calls}, {name: first-call seconds,
  compile included}). Calls every fn once (warm-up), then `repeats` rounds of one call
  each, in the order of `fns`; each call is waited for (`block`)."""

  def timed(fn):
    t0 = clock()
    block(fn())
    return clock() - t0

  first = {k: timed(fn) for k, fn in fns.items()}
  times: dict[str, list[float]] = {k: [] for k in fns}
  for _ in range(repeats):
    for k, fn in fns.items():
      times[k].append(timed(fn))
  return times, first


@dataclasses.dataclass(frozen=True)
class Sample:
  """One row's timings in one pass. jax / ref_times: seconds of the timed calls (empty
  for a cell that was skipped); flops: the work of one call, for gflops (None: none);
  extra: more columns (the merged row takes pass 1's)."""

  name: str
  jax: Sequence[float]
  ref: str | None = None
  ref_times: Sequence[float] = ()
  flops: float | None = None
  extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _stats(times: Sequence[float]) -> tuple[float, float, float]:
  """(median, min, max); NaN for no times."""
  if not times:
    return math.nan, math.nan, math.nan
  return statistics.median(times), min(times), max(times)


def merge(passes: Sequence[Sequence[Sample]]) -> list[dict]:
  """One row per name (in pass 1's order) from the Samples of every pass (each pass must
  hold the same names): see the module docstring for the columns."""
  names = [s.name for s in passes[0]]
  by_pass = [{s.name: s for s in p} for p in passes]
  if any(sorted(p) != sorted(names) for p in by_pass) or len(set(names)) != len(names):
    raise ValueError(f"the passes measured different rows: {[sorted(p) for p in by_pass]}")
  rows = []
  for name in names:
    samples = [p[name] for p in by_pass]
    first = samples[0]
    jax_all = [t for s in samples for t in s.jax]
    r: dict[str, Any] = {"name": name}
    r["jax_s"], r["jax_min"], r["jax_max"] = _stats(jax_all)
    if first.ref is not None:
      ref_all = [t for s in samples for t in s.ref_times]
      r["ref"] = first.ref
      r["ref_s"], r["ref_min"], r["ref_max"] = _stats(ref_all)
      r["ratio"] = r["jax_s"] / r["ref_s"]
    for k, s in enumerate(samples, 1):
      r[f"jax_s_p{k}"] = _stats(s.jax)[0]
      if first.ref is not None:
        r[f"ref_s_p{k}"] = _stats(s.ref_times)[0]
        r[f"ratio_p{k}"] = r[f"jax_s_p{k}"] / r[f"ref_s_p{k}"]
    if first.ref is not None:
      pass_ratios = [r[f"ratio_p{k}"] for k in range(1, len(samples) + 1)]
      r["spread"] = max(pass_ratios) - min(pass_ratios)
    if first.flops:
      r["gflops"] = first.flops / r["jax_s"] / 1e9
      if first.ref is not None:
        r["ref_gflops"] = first.flops / r["ref_s"] / 1e9
    r["repeats"], r["passes"] = len(first.jax), len(samples)
    r.update(first.extra)
    rows.append(r)
  return rows


def over_passes(one_pass: Callable[[], list[Sample]], passes: int = PASSES) -> list[dict]:
  """Runs `one_pass` (every configuration of a section once) `passes` times and merges."""
  return merge([one_pass() for _ in range(passes)])


def pair(
  name: str,
  jax_fn: Callable[[], Any],
  ref: str | None,
  ref_fn: Callable[[], Any] | None,
  repeats: int = REPEATS,
  **extra,
) -> Sample:
  """A Sample of `jax_fn` against `ref_fn` (None: jax alone), timed round-robin."""
  fns = {"jax": jax_fn} if ref_fn is None else {"jax": jax_fn, "ref": ref_fn}
  times, _ = interleaved(fns, repeats)
  return Sample(name, times["jax"], ref, times.get("ref", ()), extra=extra)
