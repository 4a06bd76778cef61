"""Session glue: the time split accumulates per phase, by the Session's own methods."""

import dataclasses

import numpy as np
import pytest

from assft_jax import components
from assft_jax import config as config_lib
from assft_jax import session as session_lib
from assft_jax.models import SegResNetDS
from tests._engine_helpers import fast_variables

C = 3


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
  module = SegResNetDS(init_filters=4, out_channels=C, blocks_down=(1, 1, 1))
  rng = np.random.default_rng(0)
  shapes = {"a": (16, 16, 16), "b": (16, 16, 16), "big": (20, 16, 24)}
  volumes = {k: rng.normal(size=s + (1,)).astype(np.float32) for k, s in shapes.items()}
  tmp = tmp_path_factory.mktemp("sess")
  cfg = config_lib.RunConfig(workdir=str(tmp))
  cfg = dataclasses.replace(
    cfg, train=dataclasses.replace(cfg.train, patch=(16, 16, 16), sw_batch_size=2)
  )
  return cfg, tmp, module, fast_variables(module, 16, 0), fast_variables(module, 16, 1), volumes


def _session(parts):
  cfg, tmp, module, variables0, _, volumes = parts
  data = components.RunData(dataset=None, volumes=volumes, split={"test": ["a"]})
  trainer = components.Trainer(cfg, volumes, ("bg", "x", "y"), module, variables0, mesh=None)
  return session_lib.Session(cfg, tmp, data, None, trainer)


def test_timing_accumulates_per_phase(parts):
  sess = _session(parts)
  t0 = sess.timing
  assert set(t0) == {"compile_s", "train_s", "score_s", "predict_s", "evaluate_s", "total_s"}
  assert t0["score_s"] == t0["predict_s"] == 0.0
  sess.score(parts[4], ["a"], 1, 3)
  t1 = sess.timing
  assert t1["score_s"] > 0 and t1["predict_s"] == 0.0 and t1["evaluate_s"] == 0.0
  sess.predict(parts[4], ["b"])
  t2 = sess.timing
  assert t2["predict_s"] > 0 and t2["score_s"] == t1["score_s"]
  assert t2["total_s"] >= t2["score_s"] + t2["predict_s"]
