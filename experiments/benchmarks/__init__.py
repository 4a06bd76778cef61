"""Benchmark sections for `python -m experiments.bench`.

Each section module exposes `run(quick: bool) -> list[dict]`. A row has at least `name`
and `jax_s` (median seconds); side-by-side rows add `ref` (what was compared),
`ref_s` and `ratio` (= jax_s / ref_s, lower is better), and may add `gflops`, `note`.
"""
