"""One benchmark entry point; every comparison is measured side by side in this run.

  python -m experiments.bench {model,engine,scoring,scores,scaling,all,ops,runs} [--json=out.json]
    [--quick]

`all` = model, engine, scoring, scores, scaling; `ops` (the layers one by one vs torch, to
find what holds the train step back) and `runs` (K runs in one program against K separate
cells) run only when named. `scores`: the embedding-score
device kernels vs numpy float64.

Every section times with one timer (benchmarks/timing.py): the contenders of a row
(JAX and, where one exists, its reference: PyTorch/MONAI, numpy) are called round-robin
after a warm-up, `REPEATS` = 5 rounds (fewer with --quick), and every configuration is
measured in 2 passes. A row gives jax_s/jax_min/jax_max and ref_s/ref_min/ref_max
(median, min, max over both passes), ratio = jax_s / ref_s (the ratio of the medians:
lower is better), the ratio of each pass (ratio_p1, ratio_p2) and spread = |ratio_p1 -
ratio_p2|: a change counts as a win only when it moves the ratio by more than the
spread. The JSON also holds each pass's medians (jax_s_p1, ref_s_p1, ...). Not a test.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import platform
import re
import sys
import time
from collections.abc import Sequence

from absl import app, flags

from assft_jax import atomic
from experiments.benchmarks import timing

SECTIONS = ("model", "engine", "scoring", "scores", "scaling")
EXTRA = ("ops", "runs")
flags.DEFINE_string("json", None, "Also write the rows as JSON here.")
flags.DEFINE_bool("quick", False, "Fewer sizes and repeats (a smoke check of the bench).")
FLAGS = flags.FLAGS


def _fmt(v) -> str:
  if isinstance(v, float):
    return f"{v:.4g}"
  return str(v)


FIRST_COLS = [
  *("section", "name", "jax_s", "jax_min", "jax_max", "ref", "ref_s", "ref_min", "ref_max"),
  *("ratio", "ratio_p1", "ratio_p2", "spread", "gflops", "ref_gflops", "note"),
]
PASS_MEDIAN = re.compile(r"(jax|ref)_s_p\d+")  # in the JSON; the table shows their ratios


def print_table(rows: list[dict]) -> None:
  cols = FIRST_COLS + sorted({k for r in rows for k in r} - set(FIRST_COLS))
  cols = [c for c in cols if any(c in r for r in rows) and not PASS_MEDIAN.fullmatch(c)]
  table = [[_fmt(r.get(c, "")) for c in cols] for r in rows]
  widths = [
    max(len(c), *(len(t[i]) for t in table)) if table else len(c) for i, c in enumerate(cols)
  ]
  print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
  for t in table:
    print("  ".join(x.ljust(w) for x, w in zip(t, widths)))


class BenchError(RuntimeError):
  """A section returned a malformed row."""


def check_rows(rows: list[dict]) -> None:
  """Every key holding "ratio" must be "ratio<suffix>" = jax_s<suffix> / ref_s<suffix>
  (the one meaning of "ratio"; suffix "" or "_pK", pass K)."""
  for r in rows:
    for k in (k for k in r if "ratio" in k):
      suffix = k[len("ratio") :] if k.startswith("ratio") else None
      jax_s, ref_s = r.get(f"jax_s{suffix}"), r.get(f"ref_s{suffix}")
      if not (
        suffix is not None
        and isinstance(jax_s, float)
        and isinstance(ref_s, float)
        and ref_s > 0
        and math.isclose(r[k], jax_s / ref_s, rel_tol=1e-9)
      ):
        raise BenchError(
          f"row {r.get('name')!r}: {k}={r[k]!r} is not jax_s{suffix or ''}/ref_s{suffix or ''} "
          f"({jax_s!r}/{ref_s!r})"
        )


def _json_safe(v):
  """NaN/inf -> None so the file is strict JSON."""
  if isinstance(v, float) and not math.isfinite(v):
    return None
  if isinstance(v, dict):
    return {k: _json_safe(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [_json_safe(x) for x in v]
  return v


def write_json(path: str, rows: list[dict], meta: dict) -> None:
  """Atomic write of {meta..., "rows": rows}."""
  atomic.write_text(path, json.dumps(_json_safe(dict(meta, rows=rows)), indent=1, allow_nan=False))


def bench(names: Sequence[str], quick: bool, json_path: str | None = None) -> list[dict]:
  """Runs the sections in order, prints one table per section, checks and returns the
  rows (each with "section"); writes them all to `json_path` when given."""
  import jax

  meta = {
    "jax": jax.__version__,
    "backend": jax.default_backend(),
    "cpus": os.cpu_count(),
    "quick": quick,
    "sections": list(names),
    "passes": timing.PASSES,
    "command": " ".join(["python -m experiments.bench", *sys.argv[1:]]),
    "loadavg_start": os.getloadavg(),
    "start_utc": _utc(),
  }
  print(
    f"# jax {jax.__version__} on {jax.default_backend()} ({os.cpu_count()} cpus, "
    f"{platform.processor() or platform.machine()}), load average "
    f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
  )
  rows = []
  for name in names:
    mod = importlib.import_module(f"experiments.benchmarks.{name}")
    section = mod.run(quick)
    for r in section:
      r.setdefault("section", name)
    check_rows(section)
    rows += section
    print_table(section)
    print()
  meta.update(loadavg_end=os.getloadavg(), end_utc=_utc())
  print(f"# load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
  if json_path:
    write_json(json_path, rows, meta)
    print(f"wrote {json_path}")
  return rows


def _utc() -> str:
  return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def main(argv):
  if len(argv) != 2 or argv[1] not in SECTIONS + EXTRA + ("all",):
    print(
      f"usage: python -m experiments.bench {{{','.join(SECTIONS + EXTRA)},all}} [--json=F] "
      "[--quick]",
      file=sys.stderr,
    )
    raise SystemExit(1) from None
  try:
    bench(SECTIONS if argv[1] == "all" else (argv[1],), FLAGS.quick, FLAGS.json)
  except BenchError as e:
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(1) from None


if __name__ == "__main__":
  app.run(main)
