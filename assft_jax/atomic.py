"""Atomic writes: a temp file in the target's folder, then `os.replace`.

A crash (or a kill) at any moment leaves either the old file or the new one, never half
of one. Every file a run or a tool writes goes through here.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_path(path: Path | str, suffix: str = "") -> Iterator[Path]:
  """Yields a temp path beside `path`; on success it is renamed onto `path`.

  `suffix` keeps the extension for writers that look at it (nibabel's `.nii.gz`,
  numpy's `.npz`). On an exception the temp file is removed and `path` is untouched.
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
  os.close(fd)
  tmp = Path(tmp)
  os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a result file is a normal file
  try:
    yield tmp
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
  tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
  os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; a shared cache must stay readable
  old = path.with_name(f".{path.name}.old")
  try:
    yield tmp
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
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
  """The process umask (read by setting it and putting it back)."""
  mask = os.umask(0)
  os.umask(mask)
  return mask
