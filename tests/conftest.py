"""Fixtures shared across test files: one uninterrupted smoke run per test session.

test_loop.py and test_faults.py both compare against it; the phantom data, the source
encoder and round 0 live in its cache dir, so each further run there pays only its rounds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests._smoke import smoke_cfg


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
  return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def smoke(tmp_path_factory, cache):
  """(cfg, workdir, summary) of smoke.flags run to the end. Tests copy the workdir; none
  changes it."""
  from assft_jax import loop

  wd = tmp_path_factory.mktemp("smoke")
  cfg = smoke_cfg(wd, cache)
  summary = loop.run(cfg)
  return cfg, wd, summary
