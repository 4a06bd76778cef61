"""Atomic writes: a temp file in the target's folder, then `os.replace`.

A crash (or a kill) at any moment leaves either the old file or the new one, never half
of one. Every file a run or a tool writes goes through here.

A full disk (ENOSPC, or a quota: EDQUOT) while writing becomes one `DiskFullError`
naming the file; the old version stays in place. Temp names left by a kill
(`.<name>.<8 chars>.tmp...`, `.<name>.old`) are never read; `clean_stale` removes them.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from assft_jax.errors import AssftError

KILL_ENV = "ASSFT_KILL_AT"
"""Fault injection for the kill tests (tests/test_faults_kill.py), unset in real runs:
"<phase>:<part of a path>:<n>" makes the process SIGKILL itself the n-th time a write
whose target path contains <part> reaches <phase>: `open` (temp made, nothing written),
`commit` (written, not yet renamed) or `swap` (an atomic_dir's old folder moved aside,
the new one not yet in place)."""
_kill_hits = [0]  # matching events so far in this process (the one piece of global state)
_STALE = re.compile(r"^\..+(\.[a-z0-9_]{8}\.tmp.*|\.old)$")
_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(AssftError):
  """No space left (or over quota) while writing a file; the message names the file."""

  def __init__(self, path: Path | str | None):
    where = f"{path}: " if path else ""
    super().__init__(
      f"{where}no space left on device (or over quota) while writing it; the previous "
      "version is intact (writes are atomic). Free some space and rerun the same command: "
      "the run continues after its last complete round."
    )


@contextlib.contextmanager
def atomic_path(path: Path | str, suffix: str = "") -> Iterator[Path]:
  """Yields a temp path beside `path`; on success it is renamed onto `path`.

  `suffix` keeps the extension for writers that look at it (nibabel's `.nii.gz`,
  numpy's `.npz`). On an exception the temp file is removed and `path` is untouched.
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with disk_full_names(path):
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a result file is a normal file
    try:
      _fault("open", path)
      yield tmp
      _fault("commit", path)
      os.replace(tmp, path)
    finally:
      tmp.unlink(missing_ok=True)


def write_bytes(path: Path | str, data: bytes) -> None:
  with atomic_path(path) as tmp:
    tmp.write_bytes(data)


def write_text(path: Path | str, text: str) -> None:
  write_bytes(path, text.encode("utf-8"))


def write_json(path: Path | str, value: Any) -> None:
  """JSON with a one-space indent, keys in insertion order."""
  write_text(path, json.dumps(value, indent=1, sort_keys=False))


def write_npz(path: Path | str, arrays: dict[str, np.ndarray], compressed: bool = True) -> None:
  buf = io.BytesIO()
  (np.savez_compressed if compressed else np.savez)(buf, **arrays)
  write_bytes(path, buf.getvalue())


@contextlib.contextmanager
def atomic_dir(path: Path | str, replace: bool = True) -> Iterator[Path]:
  """Yields a fresh temp folder beside `path`; on success it becomes `path` whole.

  replace=True (a checkpoint): an existing `path` is moved aside first and removed only
  after the new one is in place, so a kill leaves the old folder, the new one, or
  (between the two renames) the old one under a `.old` name that the next call clears.
  replace=False (a content-keyed cache entry): the first writer wins; a folder that
  another process finished first is kept and this one is dropped, so a reader never
  sees the entry missing.
  Stale temp folders of killed writers are never read: their names start with a dot
  and end in `.tmp`.
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with disk_full_names(path):
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; a shared cache must stay readable
    old = path.with_name(f".{path.name}.old")
    try:
      _fault("open", path)
      yield tmp
      _fault("commit", path)
      if not replace:
        try:
          os.rename(tmp, path)
        except OSError:
          if not path.is_dir():
            raise
        return
      if old.exists():
        shutil.rmtree(old)
      if path.exists():
        os.replace(path, old)
        _fault("swap", path)
      os.replace(tmp, path)
      shutil.rmtree(old, ignore_errors=True)
    finally:
      shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def disk_full_names(path: Path | str | None = None, fallback: Path | str | None = None):
  """Turns a full disk met inside the block into a DiskFullError naming `path`, else the
  file the OSError names, else `fallback` (e.g. the workdir, for a write that names no
  file). orbax and tensorstore wrap the OSError in their own types, so the cause chain
  and the message are searched too."""
  try:
    yield
  except DiskFullError:
    raise
  except Exception as e:
    full = _disk_full(e)
    if full is None:
      raise
    raise DiskFullError(path or full.filename or fallback) from e


def _disk_full(e: BaseException) -> OSError | None:
  """The disk-full error in `e`'s cause chain (a bare OSError stands in for one that only
  says so in its message), or None."""
  seen: set[int] = set()
  cur: BaseException | None = e
  while cur is not None and id(cur) not in seen:
    seen.add(id(cur))
    if isinstance(cur, OSError) and cur.errno in _FULL:
      return cur
    text = str(cur)
    if any(os.strerror(n) in text for n in _FULL):
      return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    cur = cur.__cause__ or cur.__context__
  return None


def clean_stale(folder: Path | str) -> list[Path]:
  """Removes the temp files and folders that killed writers left directly in `folder`
  (atomic_path's and atomic_dir's names); returns what was removed. Only for a folder
  no other process writes to (a workdir under its lock; never a shared cache)."""
  folder = Path(folder)
  gone = []
  for p in sorted(folder.iterdir()) if folder.is_dir() else ():
    if _STALE.match(p.name):
      if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
      else:
        p.unlink(missing_ok=True)
      gone.append(p)
  return gone


def _fault(phase: str, path: Path) -> None:
  """KILL_ENV's injected SIGKILL (see there); nothing when it is unset."""
  spec = os.environ.get(KILL_ENV)
  if not spec:
    return
  want, rest = spec.split(":", 1)
  part, n = rest.rsplit(":", 1)
  if want != phase or part not in str(path):
    return
  _kill_hits[0] += 1
  if _kill_hits[0] == int(n):
    os.kill(os.getpid(), signal.SIGKILL)


def _umask() -> int:
  """The process umask (read by setting it and putting it back)."""
  mask = os.umask(0)
  os.umask(mask)
  return mask
