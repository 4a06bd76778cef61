"""Process-wide settings of an entry point that trains: log levels and the persistent XLA
compilation cache."""

from __future__ import annotations

import logging

from absl import logging as absl_logging


def quiet_libraries() -> None:
  """Our progress at INFO; orbax/absl chatter (every checkpoint write) only at WARNING."""
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("assft_jax").setLevel(logging.INFO)


def enable_compilation_cache(cfg) -> None:
  """A persistent XLA cache in `<cache_dir>/xla`: a resumed run or the next cell of a
  sweep loads its executables instead of compiling them again. JAX by default keeps only
  compiles over 1 s; on CPU most take less, so every one is kept (entries are small).
  Cells running at once share it: JAX writes an entry in place, and a torn read fails
  to decompress, which JAX turns into a warning and a fresh compile."""
  import jax

  jax.config.update("jax_compilation_cache_dir", str(cfg.cache / "xla"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
