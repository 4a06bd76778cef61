"""Atomic writes: a failed write leaves the old file; folders swap whole; a kill leaves
only temp names that `clean_stale` removes; a full disk is one error naming the file."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from assft_jax import atomic
from tests._run_helpers import ROOT


def test_files_are_written_whole_or_not_at_all(tmp_path):
  path = tmp_path / "a" / "x.json"
  atomic.write_json(path, {"k": [1, 2]})
  assert json.loads(path.read_text()) == {"k": [1, 2]}
  with pytest.raises(TypeError):  # not JSON: fails after the temp file was opened
    atomic.write_json(path, {"k": object()})
  assert json.loads(path.read_text()) == {"k": [1, 2]}
  assert [p.name for p in path.parent.iterdir()] == ["x.json"], "a temp file was left"
  atomic.write_npz(tmp_path / "a.npz", {"x": np.arange(3)})
  np.testing.assert_array_equal(np.load(tmp_path / "a.npz")["x"], np.arange(3))


def test_folders_replace_whole_or_keep_the_first(tmp_path):
  d = tmp_path / "ckpt"
  with atomic.atomic_dir(d) as tmp:
    (tmp / "v").write_text("1")
  with pytest.raises(RuntimeError):
    with atomic.atomic_dir(d) as tmp:
      (tmp / "v").write_text("2")
      raise RuntimeError("killed mid-write")
  assert (d / "v").read_text() == "1"
  with atomic.atomic_dir(d) as tmp:
    (tmp / "v").write_text("3")
  assert (d / "v").read_text() == "3"
  # A content-keyed cache entry: the first writer wins, the second is dropped.
  with atomic.atomic_dir(d, replace=False) as tmp:
    (tmp / "v").write_text("4")
  assert (d / "v").read_text() == "3"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"], "temp folders were left"


def test_modes_follow_the_umask_like_a_plain_write(tmp_path):
  (tmp_path / "plain.txt").write_text("x")
  (tmp_path / "plain_dir").mkdir()
  atomic.write_text(tmp_path / "a.txt", "x")
  with atomic.atomic_dir(tmp_path / "d"):
    pass
  mode = lambda p: p.stat().st_mode & 0o777
  assert mode(tmp_path / "a.txt") == mode(tmp_path / "plain.txt")
  assert mode(tmp_path / "d") == mode(tmp_path / "plain_dir")


def test_modes_follow_the_umask_which_no_write_reads_or_sets(tmp_path, monkeypatch):
  seen = {}

  def no_umask(mask):
    raise AssertionError("a write changed the process umask")

  old = os.umask(0o027)
  try:
    monkeypatch.setattr(os, "umask", no_umask)
    with atomic.atomic_path(tmp_path / "a.txt") as tmp:
      seen["temp file"] = tmp.stat().st_mode & 0o777
      tmp.write_text("x")
    with atomic.atomic_dir(tmp_path / "d") as tmp:
      seen["temp folder"] = tmp.stat().st_mode & 0o777
    atomic.write_json(tmp_path / "b.json", {})
  finally:
    monkeypatch.undo()
    os.umask(old)
  mode = lambda p: p.stat().st_mode & 0o777
  assert seen == {"temp file": 0o640, "temp folder": 0o750}
  assert [mode(tmp_path / n) for n in ("a.txt", "b.json", "d")] == [0o640, 0o640, 0o750]


def _record_syncs(monkeypatch) -> list[tuple[str, ...]]:
  """Records ("fsync", path) and ("rename", src, dst) in the order they happen."""
  events: list[tuple[str, ...]] = []
  fsync, replace, rename = os.fsync, os.replace, os.rename

  def on_fsync(fd):
    events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
    fsync(fd)

  def on_rename(real):
    def moved(src, dst):
      events.append(("rename", str(src), str(dst)))
      real(src, dst)

    return moved

  monkeypatch.setattr(os, "fsync", on_fsync)
  monkeypatch.setattr(os, "replace", on_rename(replace))
  monkeypatch.setattr(os, "rename", on_rename(rename))
  return events


def test_file_data_is_synced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
  events = _record_syncs(monkeypatch)
  atomic.write_text(tmp_path / "x.txt", "1")
  with atomic.atomic_path(tmp_path / "y.npy", suffix=".npy") as tmp:
    np.save(tmp, np.arange(3))  # a writer of its own, by path
  x, y = str(tmp_path / "x.txt"), str(tmp_path / "y.npy")
  tmp_x, tmp_y = events[0][1], events[3][1]
  assert events == [
    ("fsync", tmp_x),
    ("rename", tmp_x, x),
    ("fsync", str(tmp_path)),
    ("fsync", tmp_y),
    ("rename", tmp_y, y),
    ("fsync", str(tmp_path)),
  ]
  assert Path(tmp_x).name.startswith(".x.txt.") and Path(tmp_y).name.endswith(".tmp.npy")


def test_folder_contents_are_synced_before_the_rename_and_the_parent_after(tmp_path, monkeypatch):
  d = tmp_path / "ckpt"
  with atomic.atomic_dir(d) as tmp:
    (tmp / "v").write_text("old")
  events = _record_syncs(monkeypatch)
  with atomic.atomic_dir(d) as tmp:
    (tmp / "sub").mkdir()
    (tmp / "sub" / "a").write_text("1")
    (tmp / "b").write_text("2")
  t, old = str(tmp), str(tmp_path / ".ckpt.old")
  synced = [e[1] for e in events[:4]]
  assert sorted(synced[:3]) == sorted([f"{t}/sub/a", f"{t}/b", f"{t}/sub"])
  assert synced.index(f"{t}/sub/a") < synced.index(f"{t}/sub")  # entries before their folder
  assert events[3:] == [
    ("fsync", t),
    ("rename", str(d), old),
    ("rename", t, str(d)),
    ("fsync", str(tmp_path)),
  ]
  # A cache entry (first writer wins): the same, with one rename.
  events.clear()
  with atomic.atomic_dir(tmp_path / "entry", replace=False) as tmp:
    (tmp / "v").write_text("1")
  t = str(tmp)
  assert events == [
    ("fsync", f"{t}/v"),
    ("fsync", t),
    ("rename", t, str(tmp_path / "entry")),
    ("fsync", str(tmp_path)),
  ]


def test_a_filesystem_that_cannot_sync_still_writes_but_a_failed_sync_fails(tmp_path, monkeypatch):
  atomic.write_text(tmp_path / "x.txt", "old")

  def fails(code):
    def fsync(fd):
      raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fsync)

  fails(errno.EINVAL)
  atomic.write_text(tmp_path / "x.txt", "new")
  with atomic.atomic_dir(tmp_path / "d") as tmp:
    (tmp / "v").write_text("1")
  assert (tmp_path / "x.txt").read_text() == "new" and (tmp_path / "d" / "v").exists()
  fails(errno.EIO)
  with pytest.raises(OSError):
    atomic.write_text(tmp_path / "x.txt", "newer")
  fails(errno.ENOSPC)  # delayed allocation: the disk fills at the sync
  with pytest.raises(atomic.DiskFullError):
    atomic.write_text(tmp_path / "x.txt", "newer")
  assert (tmp_path / "x.txt").read_text() == "new"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "x.txt"], "a temp file was left"


def _killed_writer(tmp_path, phase: str, code: str) -> None:
  """Runs `code` (with `d` the folder) in a child that SIGKILLs itself at `phase` of its
  first write there (tests/_kill_child.py), as a kill -9 at that moment would."""
  prog = (
    "import sys\nfrom pathlib import Path\nfrom assft_jax import atomic\n"
    "from tests._kill_child import arm\n"
    f"arm(sys.argv[2])\nd = Path(sys.argv[1])\n{code}"
  )
  spec = f"{phase}:{tmp_path}:1"
  proc = subprocess.run([sys.executable, "-c", prog, str(tmp_path), spec], cwd=ROOT, timeout=120)
  assert proc.returncode == -signal.SIGKILL


def test_a_kill_mid_write_leaves_the_old_version_and_named_temps(tmp_path):
  atomic.write_text(tmp_path / "x.txt", "old")
  with atomic.atomic_dir(tmp_path / "ckpt") as tmp:
    (tmp / "v").write_text("old")
  (tmp_path / ".lock").write_text("")  # a hidden file of the project's, never a temp
  _killed_writer(tmp_path, "commit", "atomic.write_text(d / 'x.txt', 'new')")
  _killed_writer(
    tmp_path, "swap", "with atomic.atomic_dir(d / 'ckpt') as t: (t / 'v').write_text('new')"
  )
  assert (tmp_path / "x.txt").read_text() == "old"
  # Killed between its two renames: the old checkpoint is under the .old name.
  assert not (tmp_path / "ckpt").exists()
  assert (tmp_path / ".ckpt.old" / "v").read_text() == "old"
  temps = {p.name for p in tmp_path.iterdir()} - {".ckpt.old", ".lock", "x.txt"}
  assert sorted(t.split(".")[1] for t in temps) == ["ckpt", "x"]
  assert all(t.endswith(".tmp") for t in temps)
  gone = atomic.clean_stale(tmp_path)
  assert {p.name for p in gone} == temps | {".ckpt.old"}
  assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "x.txt"]


def test_a_full_disk_names_the_file_and_keeps_the_old_version(tmp_path, monkeypatch):
  path = tmp_path / "summary.json"
  atomic.write_json(path, {"v": 1})
  with atomic.atomic_dir(tmp_path / "model") as tmp:
    (tmp / "w").write_text("1")

  def full(self, data):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(Path, "write_bytes", full)
  with pytest.raises(atomic.DiskFullError) as e:
    atomic.write_json(path, {"v": 2})
  assert str(e.value).startswith(f"{path}: no space left on device")
  monkeypatch.undo()
  assert json.loads(path.read_text()) == {"v": 1}
  # orbax/tensorstore report it in their own error types, by message only.
  with pytest.raises(atomic.DiskFullError) as e:
    with atomic.atomic_dir(tmp_path / "model") as tmp:
      raise ValueError("OUT_OF_RANGE: Error writing local file: No space left on device")
  assert str(e.value).startswith(f"{tmp_path / 'model'}: no space left on device")
  assert (tmp_path / "model" / "w").read_text() == "1"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "summary.json"]
  # Another OSError stays itself.
  with pytest.raises(PermissionError):
    with atomic.atomic_dir(tmp_path / "model"):
      raise PermissionError(errno.EACCES, "Permission denied")
