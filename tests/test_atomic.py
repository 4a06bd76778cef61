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


def _killed_writer(tmp_path, phase: str, code: str) -> None:
  """Runs `code` (with `d` the folder) in a child that SIGKILLs itself at `phase` of its
  first write there (atomic.KILL_ENV), as a kill -9 at that moment would."""
  env = dict(os.environ, **{atomic.KILL_ENV: f"{phase}:{tmp_path}:1"})
  prog = f"import sys\nfrom pathlib import Path\nfrom assft_jax import atomic\nd = Path(sys.argv[1])\n{code}"
  proc = subprocess.run([sys.executable, "-c", prog, str(tmp_path)], env=env, timeout=120)
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
