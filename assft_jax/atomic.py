"""Atomic writes: a temp file in the target's folder, then `os.replace`.

A crash (or a kill) at any moment leaves either the old file or the new one, never half
of one. Every file a run or a tool writes goes through here. Writes are durable too: a
file's data is fsynced before its rename and the folder after it, so a power loss right
after a write returns does not undo it (or leave an empty file under the new name).

A full disk (ENOSPC, or a quota: EDQUOT) while writing becomes one `DiskFullError`
naming the file; the old version stays in place. Temp names left by a kill
(`.<name>.<8 chars>.tmp...`, `.<name>.old`) are never read; `clean_stale` removes them.

Temp files and folders are created with modes 0666 and 0777 for the kernel to apply the
umask (and any default ACL) to, as for a plain `open` or `mkdir`; the process umask is
never read or changed here, which other threads (JAX, orbax, grain) creating files at
the same moment would race with.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from assft_jax.errors import AssftError

_STALE = re.compile(r"^\..+(\.[a-z0-9_]{8}\.tmp.*|\.old)$")
_FULL = (errno.ENOSPC, errno.EDQUOT)
_NO_SYNC = (errno.EINVAL, errno.ENOTSUP)


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
  """Yields a temp path beside `path`; on success it is synced and renamed onto `path`.

  `suffix` keeps the extension for writers that look at it (nibabel's `.nii.gz`,
  numpy's `.npz`). The temp file exists (empty) when the block starts; whoever writes it
  there, its data is fsynced after the block, once. On an exception the temp file is
  removed and `path` is untouched.
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with disk_full_names(path):
    tmp = _new_temp(path, suffix)
    try:
      yield tmp
      _sync(tmp)
      _publish(tmp, path)
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
  Every file and folder written into the temp folder is fsynced before the rename, the
  parent folder after it.
  Stale temp folders of killed writers are never read: their names start with a dot
  and end in `.tmp`.
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with disk_full_names(path):
    tmp = _new_temp_dir(path)
    try:
      yield tmp
      _sync_tree(tmp)
      _publish_dir(tmp, path, replace)
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


# The steps below are the points a write passes through (the kill tests wrap them to
# SIGKILL the process there): the temp made, the rename that publishes it, and, for a
# folder replacing another, the old one set aside.


def _new_temp(path: Path, suffix: str) -> Path:
  """A new empty file `.<name>.<8 chars>.tmp<suffix>` beside `path`."""
  for _ in range(100):
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{suffix}")
    try:
      os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except FileExistsError:
      continue
    return tmp
  raise FileExistsError(errno.EEXIST, "no free temp name", str(path))


def _new_temp_dir(path: Path) -> Path:
  """A new empty folder `.<name>.<8 chars>.tmp` beside `path`."""
  for _ in range(100):
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
      os.mkdir(tmp, 0o777)
    except FileExistsError:
      continue
    return tmp
  raise FileExistsError(errno.EEXIST, "no free temp name", str(path))


def _publish(tmp: Path, path: Path) -> None:
  """Renames the written, synced temp file onto `path` and syncs the folder."""
  os.replace(tmp, path)
  _sync(path.parent)


def _publish_dir(tmp: Path, path: Path, replace: bool) -> None:
  """Renames the written, synced temp folder onto `path` (see atomic_dir for `replace`)
  and syncs the parent folder."""
  if not replace:
    try:
      os.rename(tmp, path)
    except OSError:
      if not path.is_dir():
        raise
      return  # another writer's entry is in place (and was synced by it)
    _sync(path.parent)
    return
  old = path.with_name(f".{path.name}.old")
  if old.exists():
    shutil.rmtree(old)
  if path.exists():
    _set_aside(path, old)
  os.replace(tmp, path)
  _sync(path.parent)
  shutil.rmtree(old, ignore_errors=True)


def _set_aside(path: Path, old: Path) -> None:
  """Moves the folder being replaced to its `.old` name."""
  os.replace(path, old)


def _sync(path: Path) -> None:
  """fsync of a file's data or a folder's entries, by path (a writer that is not ours
  may have written the file). A filesystem that cannot sync (EINVAL, ENOTSUP: some
  network and FUSE mounts refuse it for folders) keeps the write atomic, only not
  durable; any other error (EIO, a full disk) fails the write."""
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  except OSError as e:
    if e.errno not in _NO_SYNC:
      raise
  finally:
    os.close(fd)


def _sync_tree(folder: Path) -> None:
  """fsync of every file and folder under `folder` (files first, each folder after its
  entries, `folder` last); symlinks are left alone."""
  for root, dirs, files in os.walk(folder, topdown=False):
    for name in files:
      p = Path(root, name)
      if not p.is_symlink():
        _sync(p)
    for name in dirs:
      p = Path(root, name)
      if not p.is_symlink():
        _sync(p)
  _sync(folder)
