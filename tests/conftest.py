"""Fixtures and hooks shared across test files.

One uninterrupted smoke run per test session: test_loop.py and test_faults.py both
compare against it; the phantom data, the source encoder and round 0 live in its cache
dir, so each further run there pays only its rounds.

Tests marked `onednn` need the oneDNN conv extension. Where it is unavailable they are
skipped, pointing at the one test that fails then and says why
(test_the_extension_is_built_for_this_environment, tests/test_onednn.py).
"""

from __future__ import annotations

from pathlib import Path

import jax
import pytest

from tests._smoke import smoke_cfg

# Matmuls and convolutions at full float32 precision in every test: a parity or equality
# tolerance then means the same on a GPU, where XLA may otherwise compute them in TF32.
jax.config.update("jax_default_matmul_precision", "highest")

ONEDNN_CHECK = "tests/test_onednn.py::test_the_extension_is_built_for_this_environment"


def pytest_collection_modifyitems(config, items):
  marked = [item for item in items if item.get_closest_marker("onednn")]
  if not marked:
    return
  from assft_jax.models import onednn

  if why := onednn.why_unavailable():
    skip = pytest.mark.skip(reason=f"oneDNN conv extension unavailable, see {ONEDNN_CHECK}: {why}")
    for item in marked:
      item.add_marker(skip)


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
