"""The one error type of the data layer."""

from __future__ import annotations

from collections.abc import Iterable

from assft_jax.errors import AssftError


class DataError(AssftError, ValueError):
  """Bad input data. Lists every problem found, one line per file.

  `problems` keeps the individual lines so the check CLI and tests can read them.
  """

  def __init__(self, problems: Iterable[str] | str, header: str | None = None):
    if isinstance(problems, str):
      problems = [problems]
    self.problems: tuple[str, ...] = tuple(problems)
    lines = ([header] if header else []) + list(self.problems)
    super().__init__("\n".join(lines))
