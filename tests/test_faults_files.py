"""Faults around a run: a second run on the workdir, two processes filling one cache,
annotators' files that are half-written or on another grid, and (slow) a run with HOME and
the current directory read-only that writes nowhere else."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import pty
import socket
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from assft_jax import lock, loop, oracle
from assft_jax.data import PreprocessConfig, load_index, prepare
from assft_jax.data.phantom import generate
from tests._run_helpers import ROOT, run_cmd
from tests._smoke import smoke_cfg

HOLDER = """import sys
from assft_jax import lock
with lock.locked(sys.argv[1]):
  print("held", flush=True)
  sys.stdin.read()
"""


def test_a_second_run_is_refused_naming_the_holder(tmp_path, caplog):
  wd = tmp_path / "wd"
  holder = subprocess.Popen(
    [sys.executable, "-c", HOLDER, str(wd)],
    stdin=subprocess.PIPE,
    stdout=subprocess.PIPE,
    text=True,
  )
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(lock.WorkdirBusy) as e:
      loop.run(smoke_cfg(wd, tmp_path / "cache"))
    assert f"is in use by pid {holder.pid} on host {socket.gethostname()}" in str(e.value)
    assert [p.name for p in wd.iterdir()] == [".lock"], "the refused run wrote something"
  finally:
    holder.kill()  # SIGKILL: its lock file still names it
    holder.wait()
  with caplog.at_level(logging.WARNING, logger="assft_jax.lock"):
    with lock.locked(wd):
      assert json.loads((wd / ".lock").read_text())["pid"] == os.getpid()
      with pytest.raises(lock.WorkdirBusy, match=f"in use by pid {os.getpid()} "):
        with lock.locked(wd):
          pass
  assert f"took over the lock of pid {holder.pid} on host" in caplog.text
  assert (wd / ".lock").read_text() == "", "a clean exit leaves no holder behind"
  caplog.clear()
  with caplog.at_level(logging.WARNING, logger="assft_jax.lock"), lock.locked(wd):
    pass
  assert "took over" not in caplog.text


FILL = """import sys, time
from pathlib import Path
from assft_jax.data import PreprocessConfig, load_index, prepare
go = Path(sys.argv[3])
while not go.exists():
  time.sleep(0.01)
vols = prepare(load_index(sys.argv[1]), PreprocessConfig(), sys.argv[2])
print(sorted((k, float(v.image.sum())) for k, v in vols.items()))
"""


def test_two_processes_fill_one_preprocessing_cache_at_once(tmp_path):
  """The sweep's cells share --cache_dir: entries are made in a temp folder and renamed,
  first writer wins; both processes must succeed and read the same whole entries."""
  data = generate(tmp_path / "ph", "mr", 6, (16, 16, 16), seed=0)
  go = tmp_path / "go"
  cmd = [sys.executable, "-c", FILL, str(data), str(tmp_path / "cache"), str(go)]
  procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(2)]
  go.write_text("")
  outs = [p.communicate(timeout=300)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0]
  assert outs[0] == outs[1] and outs[0].count("mr_") == 6
  left = sorted(p.name for p in (tmp_path / "cache").iterdir())
  assert len(left) == 6 and not [n for n in left if n.startswith(".")]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("ph")
  ds = load_index(generate(tmp / "ph", "mr", 2, (16, 16, 16), seed=0))
  pcfg = PreprocessConfig()
  return ds, pcfg, prepare(ds, pcfg, tmp / "cache")


def _origin(affine) -> str:
  return "origin (" + ", ".join(f"{x:.4g}" for x in np.asarray(affine)[:3, 3]) + ")"


def test_half_written_and_shifted_labels_are_refused_and_the_run_waits(phantom, tmp_path):
  ds, pcfg, vols = phantom
  a, b = ds.ids
  labels = tmp_path / "labels"
  labels.mkdir()
  orc = oracle.ManifestOracle(ds, pcfg, tmp_path / "wd", labels)
  # a: the annotator's tool is still writing it (half of its gzip stream).
  whole = ds.case(a).label.read_bytes()
  (labels / f"{a}.nii.gz").write_bytes(whole[: len(whole) // 2])
  # b: complete, but its grid is 2.5 mm off along the first axis.
  src = nib.load(ds.case(b).label)
  shifted = src.affine.copy()
  shifted[0, 3] += 2.5
  nib.save(nib.Nifti1Image(np.asarray(src.dataobj), shifted, src.header), labels / f"{b}.nii.gz")
  with pytest.raises(oracle.AnnotationPending) as e:
    orc.label([a, b], 1)
  msg = str(e.value)
  assert "invalid label files (2)" in msg and "missing" not in msg
  line_a, line_b = (next(x for x in msg.splitlines() if x.startswith(f"  {c}: ")) for c in (a, b))
  assert f"{labels / a}.nii.gz" in line_a and "corrupt voxel data" in line_a
  image_affine = nib.load(ds.case(b).image).affine
  assert "by up to 2.5 " in line_b
  assert f"label {_origin(shifted)}" in line_b and f"image {_origin(image_affine)}" in line_b
  # a is finished: still waiting, now for b alone; nothing of a is used yet.
  (labels / f"{a}.nii.gz").write_bytes(whole)
  with pytest.raises(oracle.AnnotationPending) as e:
    orc.label([a, b], 1)
  assert "invalid label files (1)" in str(e.value) and f"  {a}: " not in str(e.value)
  nib.save(nib.Nifti1Image(np.asarray(src.dataobj), src.affine, src.header), labels / f"{b}.nii.gz")
  got = orc.label([a, b], 1)
  for cid in (a, b):  # the dataset's own labels, preprocessed by `prepare`
    np.testing.assert_array_equal(got[cid], vols[cid].label)


def _files(*roots: Path) -> dict[str, str]:
  return {
    str(p): hashlib.sha1(p.read_bytes()).hexdigest()
    for root in roots
    for p in sorted(root.rglob("*"))
    if p.is_file() or p.is_symlink()
  }


@pytest.mark.slow
def test_a_run_writes_only_into_its_workdir_and_cache(tmp_path):
  """HOME and the current directory read-only, TMPDIR watched, stderr a terminal (so the
  progress bars draw): the smoke run succeeds and no file appears outside workdir and
  cache. (As root the modes do not stop a write: the snapshots are the check.)"""
  home, cwd, tmp = tmp_path / "home", tmp_path / "cwd", tmp_path / "tmp"
  for d in (home, cwd, tmp):
    d.mkdir()
  (home / ".profile").write_text("")
  env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "MPL", "JAX_"))}
  env.update(HOME=str(home), TMPDIR=str(tmp), PYTHONPATH=str(ROOT))
  wd, cache = tmp_path / "wd", tmp_path / "cache"
  before = _files(home, cwd, tmp)
  home.chmod(0o555)
  cwd.chmod(0o555)
  master, slave = pty.openpty()
  # tqdm draws nothing on a terminal 0 columns wide, which a fresh pty is.
  fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
  out: list[bytes] = []
  reader = threading.Thread(target=_drain, args=(master, out), daemon=True)
  reader.start()
  try:
    proc = subprocess.run(
      run_cmd(wd, cache), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=slave, timeout=1800
    )
  finally:
    os.close(slave)
    home.chmod(0o755)
    cwd.chmod(0o755)
  reader.join(timeout=10)
  text = b"".join(out).decode(errors="replace")
  assert proc.returncode == 0, text[-3000:]
  assert "r1 s1" in text, "the progress bars did not draw"
  assert _files(home, cwd, tmp) == before
  assert json.loads((wd / "summary.json").read_text())["complete"]
  assert any((cache / "xla").iterdir()), "the XLA cache is not in --cache_dir"


def _drain(fd: int, out: list[bytes]) -> None:
  """Reads a pty until its other end closes (a full pty would block the child)."""
  while True:
    try:
      chunk = os.read(fd, 65536)
    except OSError:
      break
    if not chunk:
      break
    out.append(chunk)
