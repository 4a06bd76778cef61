"""Atomic writes: a failed write leaves the old file; folders swap whole."""

from __future__ import annotations

import json

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
