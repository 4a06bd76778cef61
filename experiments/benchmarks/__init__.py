"""Benchmark sections for `python -m experiments.bench`.

Each section module exposes `run(quick: bool) -> list[dict]` and times with the one timer
of `timing.py` (round-robin contenders, `REPEATS` rounds, `PASSES` passes, rows from
`timing.merge`). A row has at least `name` and `jax_s` (median seconds) with `jax_min`,
`jax_max`; side-by-side rows add `ref` (what was compared), `ref_s`/`ref_min`/`ref_max`,
`ratio` (= jax_s / ref_s, lower is better), `ratio_p1`/`ratio_p2` (each pass's) and
`spread`, and may add `gflops`, `note`.
"""
