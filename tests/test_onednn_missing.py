"""Where the oneDNN conv extension is unavailable, exactly one test fails and says why;
every other oneDNN case is skipped and points at it (tests/conftest.py).

Runs pytest on test_onednn.py and the oneDNN cases of test_models_parity.py in a
subprocess whose build folder ($ASSFT_ONEDNN_DIR) is empty: "not built", or whatever
else this machine lacks first (g++, the wheels)."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from assft_jax.models import onednn_build
from tests.conftest import ONEDNN_CHECK

ROOT = Path(__file__).resolve().parents[1]


def test_without_the_extension_one_test_fails_and_the_rest_skip(tmp_path, monkeypatch):
  empty, report = tmp_path / "empty", tmp_path / "report.xml"
  empty.mkdir()
  monkeypatch.setenv("ASSFT_ONEDNN_DIR", str(empty))
  why = onednn_build.why_unavailable()
  assert why is not None
  env = dict(os.environ)
  files = ["tests/test_onednn.py", "tests/test_models_parity.py"]
  cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files]
  proc = subprocess.run(
    [*cmd, "-k", "onednn", f"--junitxml={report}"], cwd=ROOT, env=env, capture_output=True
  )
  assert proc.returncode == 1, proc.stdout.decode()[-3000:]
  outcome = {}
  for case in ET.parse(report).getroot().iter("testcase"):
    result = [c for c in case if c.tag in ("failure", "error", "skipped")]
    name = f"{case.get('classname').replace('.', '/')}.py::{case.get('name')}"
    outcome[name] = (result[0].tag, result[0].get("message", "")) if result else ("passed", "")
  failed = {name: msg for name, (tag, msg) in outcome.items() if tag in ("failure", "error")}
  assert list(failed) == [ONEDNN_CHECK]
  assert failed[ONEDNN_CHECK].endswith(f"the oneDNN conv extension is unavailable: {why}")
  skipped = {name: msg for name, (tag, msg) in outcome.items() if tag == "skipped"}
  assert all(ONEDNN_CHECK in msg for msg in skipped.values())
  parity = [name for name in outcome if "test_models_parity" in name]
  assert parity and all(name in skipped for name in parity)
  assert sum("test_onednn.py" in name for name in skipped) >= 15
