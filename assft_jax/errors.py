"""One base class for every error a user can cause, the exit codes, and the CLI guard.

A user error (a flag, a file, a dataset, a checkpoint, an annotation, a diverged
training run) derives from `AssftError`; its message names the flag or file. Every
entry point wraps its work in `cli_errors()`, which prints that message on one line of
stderr and exits with the error's code. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import sys

EXIT_OK = 0
EXIT_ERROR = 1
"""A clear error: bad flag, bad data, bad checkpoint, diverged training, ..."""
EXIT_PENDING = 3
"""Waiting for annotators (--oracle=manifest): label the listed cases and rerun."""


class AssftError(Exception):
  """Base of every error a user can cause; `cli_errors` turns it into one clear line."""

  exit_code = EXIT_ERROR
  prefix = "error: "


@contextlib.contextmanager
def cli_errors():
  """Prints a user error as one line (no traceback) and exits with its code."""
  try:
    yield
  except AssftError as e:
    print(f"{e.prefix}{e}", file=sys.stderr)
    sys.exit(e.exit_code)
