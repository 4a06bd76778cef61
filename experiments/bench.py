"""One benchmark entry point; every comparison is measured side by side in this run.

  python -m experiments.bench {model,engine,scoring,scaling,all} [--json=out.json] [--quick]

Prints a table of medians (after warm-up) and, where a reference exists (PyTorch/MONAI,
numpy), `ratio` = JAX time / reference time: lower is better. Not a test.
"""
from __future__ import annotations

import importlib
import json
import os
import platform
import sys

from absl import app, flags

SECTIONS = ("model", "engine", "scoring", "scaling")
flags.DEFINE_string("json", None, "Also write the rows as JSON here.")
flags.DEFINE_bool("quick", False, "Fewer sizes and repeats (a smoke check of the bench).")
FLAGS = flags.FLAGS


def _fmt(v) -> str:
  if isinstance(v, float):
    return f"{v:.4g}"
  return str(v)


def print_table(rows: list[dict]) -> None:
  cols = ["section", "name", "jax_s", "ref", "ref_s", "ratio", "gflops", "note"]
  cols += sorted({k for r in rows for k in r} - set(cols))
  cols = [c for c in cols if any(c in r for r in rows)]
  table = [[_fmt(r.get(c, "")) for c in cols] for r in rows]
  widths = [max(len(c), *(len(t[i]) for t in table)) if table else len(c)
            for i, c in enumerate(cols)]
  print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
  for t in table:
    print("  ".join(x.ljust(w) for x, w in zip(t, widths)))


def main(argv):
  if len(argv) != 2 or argv[1] not in SECTIONS + ("all",):
    print(f"usage: python -m experiments.bench {{{','.join(SECTIONS)},all}} [--json=F] "
          "[--quick]", file=sys.stderr)
    raise SystemExit(1)
  wanted = SECTIONS if argv[1] == "all" else (argv[1],)
  import jax
  print(f"# jax {jax.__version__} on {jax.default_backend()} "
        f"({os.cpu_count()} cpus, {platform.processor() or platform.machine()})")
  rows = []
  for name in wanted:
    mod = importlib.import_module(f"experiments.benchmarks.{name}")
    section = mod.run(FLAGS.quick)
    for r in section:
      r.setdefault("section", name)
    rows += section
    print_table(section)
    print()
  if FLAGS.json:
    tmp = FLAGS.json + ".tmp"
    with open(tmp, "w") as f:
      json.dump({"jax": jax.__version__, "backend": jax.default_backend(), "rows": rows}, f,
                indent=1)
    os.replace(tmp, FLAGS.json)
    print(f"wrote {FLAGS.json}")


if __name__ == "__main__":
  app.run(main)
