"""Builds the oneDNN conv extension (onednn_conv.cc) for this environment.

`python -m assft_jax.models.onednn_build [--force]` (the Makefile's venv step) compiles
it with the machine's g++ against jaxlib's FFI headers and the `onednn-cpu-gomp` /
`onednn-devel-cpu-gomp` wheels (oneDNN 3.2, OpenMP threading, CPU only: 39 MB, against
601 MB of SYCL runtimes for the `onednn` wheel). The file goes into the environment,
`<sys.prefix>/lib/assft_jax/` (or $ASSFT_ONEDNN_DIR), named by a hash of the source,
the jaxlib version and oneDNN's version header, so a stale build is never loaded.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jaxlib

_SOURCE = Path(__file__).with_name("onednn_conv.cc")
# Where the wheels put oneDNN, and where the build goes: the active environment.
# ASSFT_ONEDNN_DIR overrides the build's folder (a read-only system Python, say).
_PREFIX = Path(sys.prefix)


def _build_dir() -> Path:
  return Path(os.environ.get("ASSFT_ONEDNN_DIR", _PREFIX / "lib" / "assft_jax"))


def _fingerprint() -> str:
  """Hash of what the binary depends on: the source, jaxlib, and oneDNN's headers."""
  h = hashlib.sha256(_SOURCE.read_bytes())
  h.update(jaxlib.__version__.encode())
  header = _PREFIX / "include" / "dnnl_version.h"
  if header.exists():
    h.update(header.read_bytes())
  return h.hexdigest()[:16]


def library_path() -> Path:
  return _build_dir() / f"libassft_onednn-{_fingerprint()}.so"


def build(force: bool = False) -> Path:
  """Compiles onednn_conv.cc into `library_path()` (atomically: temp file, then rename).

  Raises RuntimeError naming what is missing (g++, the oneDNN wheels) or g++'s message.
  """
  out = library_path()
  if out.exists() and not force:
    return out
  cxx = shutil.which(os.environ.get("CXX", "g++"))
  include, lib = _PREFIX / "include", _PREFIX / "lib"
  if cxx is None:
    raise RuntimeError("no C++ compiler (g++, or $CXX) on PATH")
  if not (include / "dnnl.hpp").exists() or not any(lib.glob("libdnnl.so*")):
    raise RuntimeError(
      f"oneDNN's headers or library are not in {_PREFIX} "
      "(pip install onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0)"
    )
  out.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
  os.close(fd)
  cmd = [
    cxx, "-O2", "-std=c++17", "-shared", "-fPIC",
    f"-I{jax.ffi.include_dir()}", f"-I{include}", str(_SOURCE),
    f"-L{lib}", "-ldnnl", f"-Wl,-rpath,{lib}", "-o", tmp,
  ]  # fmt: skip
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
      raise RuntimeError(f"g++ failed on {_SOURCE.name}:\n{proc.stderr[-4000:]}")
    os.replace(tmp, out)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  # Older builds (another source or jaxlib) are dead weight; keep only this one.
  for old in out.parent.glob("libassft_onednn-*.so"):
    if old != out:
      old.unlink(missing_ok=True)
  return out


def main(argv: list[str]) -> int:
  """Build (or keep) the extension. Prints why it could not, and exits 0 then, because
  the XLA path still works (the Makefile's venv step must not fail without g++)."""
  if argv[1:] not in ([], ["--force"]):
    print("usage: python -m assft_jax.models.onednn_build [--force]", file=sys.stderr)
    return 2
  try:
    path = build(force="--force" in argv)
  except RuntimeError as err:
    print(f"oneDNN conv extension not built, the XLA conv path stays in use: {err}")
    return 0
  from assft_jax.models import onednn

  ok = onednn.available()
  print(f"oneDNN conv extension: {path} ({'loads' if ok else 'DOES NOT LOAD'})")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv))
