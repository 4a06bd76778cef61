"""Turns the project's own errors into one clear message on stderr and an exit code.

Every error a user can cause (a flag, a file, a dataset, a checkpoint, an annotation, a
diverged training run) has its own class whose message names the flag or file. Those
never show a traceback; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import contextlib
import sys


def user_errors() -> tuple[type[BaseException], ...]:
  from assft_jax.config import ConfigError
  from assft_jax.data.errors import DataError
  from assft_jax.models.checkpoint import CheckpointError
  from assft_jax.strategies.base import StrategyError
  from assft_jax.workdir import WorkdirError
  from assft_jax.engine.train import TrainingDiverged
  return (ConfigError, DataError, CheckpointError, StrategyError, WorkdirError,
          TrainingDiverged)


@contextlib.contextmanager
def cli_errors():
  from assft_jax.oracle import AnnotationPending
  try:
    yield
  except AnnotationPending as e:
    print(str(e), file=sys.stderr)
    sys.exit(AnnotationPending.exit_code)
  except user_errors() as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
