"""A run that kills itself at a named write point (the kill tests' launcher):

  python -m tests._kill_child <phase>:<part of a path>:<n> <experiments.run's arguments>

runs experiments.run in this process with assft_jax.atomic's write steps wrapped so that
the process SIGKILLs itself the n-th time a write whose target path contains <part>
reaches <phase>: `open` (temp made, nothing written), `commit` (written and synced, not
yet renamed) or `swap` (an atomic_dir's old folder moved aside, the new one not yet in
place). Counted in this process only.
"""

from __future__ import annotations

import functools
import os
import signal
import sys

from assft_jax import atomic

# (phase, the step it wraps, whether the kill comes after the step, the argument that is
# the target path)
_STEPS = (
  ("open", "_new_temp", True, 0),
  ("open", "_new_temp_dir", True, 0),
  ("commit", "_publish", False, 1),
  ("commit", "_publish_dir", False, 1),
  ("swap", "_set_aside", True, 0),
)


def arm(spec: str) -> None:
  """Wraps atomic's steps in this process for the kill `spec` (see the module doc)."""
  want, rest = spec.split(":", 1)
  part, n = rest.rsplit(":", 1)
  if want not in {phase for phase, *_ in _STEPS}:
    raise ValueError(f"{spec}: the phase is one of open, commit, swap")
  hits = [0]

  def hit(path) -> None:
    if part in str(path):
      hits[0] += 1
      if hits[0] == int(n):
        os.kill(os.getpid(), signal.SIGKILL)

  def wrap(step, after: bool, arg: int):
    @functools.wraps(step)
    def wrapped(*args, **kwargs):
      if not after:
        hit(args[arg])
      out = step(*args, **kwargs)
      if after:
        hit(args[arg])
      return out

    return wrapped

  for phase, name, after, arg in _STEPS:
    if phase == want:
      setattr(atomic, name, wrap(getattr(atomic, name), after, arg))


def main() -> None:
  arm(sys.argv.pop(1))
  from absl import app

  from experiments import run

  app.run(run.main)


if __name__ == "__main__":
  main()
