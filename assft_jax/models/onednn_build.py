"""Builds the oneDNN conv extension (onednn_conv.cc) for this environment.

`python -m assft_jax.models.onednn_build [--force]` (the Makefile's venv step) compiles
it with the machine's g++ against jaxlib's FFI headers and the `onednn-cpu-gomp` /
`onednn-devel-cpu-gomp` wheels (oneDNN 3.2, OpenMP threading, CPU only; the package's
`cpu` extra, `pip install 'assft-jax[cpu]'`). The file goes into the environment,
`<sys.prefix>/lib/assft_jax/` (or $ASSFT_ONEDNN_DIR), named by a hash of the source,
the jaxlib version and oneDNN's version header, so a stale build is never loaded.

`why_unavailable()` says why there is no build for this environment (no g++, no
wheels, not built yet), from the same checks `build()` makes; the layers and the tests
report it.
"""

from __future__ import annotations

import hashlib
import os
import platform
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


def _platform() -> tuple[str, str]:
  return sys.platform, platform.machine()


def _compiler() -> str | None:
  return shutil.which(os.environ.get("CXX", "g++"))


def _missing() -> str | None:
  """What the build needs and this environment lacks, or None when it can build."""
  system, machine = _platform()
  if system != "linux" or machine != "x86_64":
    return f"the oneDNN wheels are for x86-64 Linux only, and this is {system} {machine}"
  install = "pip install 'assft-jax[cpu]' (in a checkout: pip install -e '.[cpu]')"
  if not any((_PREFIX / "lib").glob("libdnnl.so*")):
    return f"the onednn-cpu-gomp wheel (oneDNN's library) is not installed in {_PREFIX}: {install}"
  if not (_PREFIX / "include" / "dnnl.hpp").exists():
    return (
      f"the onednn-devel-cpu-gomp wheel (oneDNN's headers) is not installed in {_PREFIX}: {install}"
    )
  if _compiler() is None:
    return "no C++ compiler (g++, or $CXX) on PATH to build the extension"
  return None


def why_unavailable() -> str | None:
  """Why this environment has no build of the extension, or None when it has one (whether
  it loads is `onednn.why_unavailable()`'s question)."""
  path = library_path()
  if path.exists():
    return None
  why = _missing()
  if why is None:
    return f"not built for this environment ({path}): python -m assft_jax.models.onednn_build"
  return why


def build(force: bool = False) -> Path:
  """Compiles onednn_conv.cc into `library_path()` (atomically: temp file, then rename).

  Raises RuntimeError naming what is missing (`_missing()`) or g++'s message.
  """
  out = library_path()
  if out.exists() and not force:
    return out
  if why := _missing():
    raise RuntimeError(why)
  cxx, include, lib = _compiler(), _PREFIX / "include", _PREFIX / "lib"
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
  """Build (or keep) the extension; exit 0 only when it is built and loads. Otherwise it
  prints why (one line; g++'s own messages when it fails) and exits 1: the Makefile's venv step then carries on without
  its stamp, so the next `make` tries again (after g++ is installed, say)."""
  if argv[1:] not in ([], ["--force"]):
    print("usage: python -m assft_jax.models.onednn_build [--force]", file=sys.stderr)
    return 2
  try:
    path = build(force="--force" in argv)
  except RuntimeError as err:
    print(f"oneDNN conv extension not built, the XLA conv path stays in use: {err}")
    return 1
  from assft_jax.models import onednn

  ok = onednn.available()
  print(f"oneDNN conv extension: {path} ({'loads' if ok else 'DOES NOT LOAD'})")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv))
