"""One run per workdir: an flock on WORKDIR/.lock, with the holder's pid and host inside.

The kernel drops an flock when its process dies, so a killed run's lock never blocks the
next one; the pid written inside only names the holder in the refusal and the warning.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from assft_jax.errors import AssftError

log = logging.getLogger("assft_jax.lock")
LOCK = ".lock"


class WorkdirBusy(AssftError):
  """Another live process holds the workdir; the message names its pid and host."""


@contextlib.contextmanager
def locked(workdir: Path | str) -> Iterator[Path]:
  """Holds the workdir's lock (WORKDIR/.lock, flock) for the block; yields the workdir.

  A second run on the workdir is refused at once, naming the holder's pid and host. The
  kernel drops a flock when its process dies, so a lock left by a killed run is simply
  taken, with a warning naming that run. The lock file is written in place, not through
  `atomic`: the flock belongs to its inode, which must not change.
  """
  wd = Path(workdir)
  wd.mkdir(parents=True, exist_ok=True)
  fd = os.open(wd / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise WorkdirBusy(
        f"--workdir={wd} is in use by {_holder(os.pread(fd, 4096, 0))}; two runs on one "
        "workdir would overwrite each other's rounds. Wait for that run to end (or stop "
        "it), or use another --workdir."
      ) from None
    earlier = os.pread(fd, 4096, 0)
    if earlier.strip():  # a clean exit empties the file: this one was killed
      log.warning("took over the lock of %s, which is gone (killed?)", _holder(earlier))
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%F %T")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(me).encode(), 0)
    try:
      yield wd
    finally:
      os.ftruncate(fd, 0)
  finally:
    os.close(fd)  # releases the flock


def _holder(raw: bytes) -> str:
  try:
    h = json.loads(raw)
    return f"pid {h['pid']} on host {h['host']} (since {h['since']})"
  except (ValueError, KeyError, TypeError):
    return "another process (its lock file names none)"
