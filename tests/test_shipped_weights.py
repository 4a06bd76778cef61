"""The shipped phantom source encoder (experiments/weights) loads as the benchmark uses it,
and its recorded held-out Dice is what the README there claims."""

import json

import jax
import numpy as np

from assft_jax import models
from tests._run_helpers import ROOT

SHIPPED = ROOT / "experiments" / "weights" / "phantom_ct_f8_b1111"


def test_shipped_encoder_loads_into_the_benchmark_network():
  module, variables = models.load_pretrained(SHIPPED, out_channels=8)
  x = np.random.default_rng(0).normal(size=(1, 32, 32, 32, 1)).astype(np.float32)
  logits = module.apply(variables, x, train=False)
  assert logits.shape == (1, 32, 32, 32, 8) and bool(jax.numpy.isfinite(logits).all())
  for flag in ("--pretrained=experiments/weights/phantom_ct_f8_b1111", "--init_filters=8"):
    for name in ("benchmark", "demo"):
      assert flag in (ROOT / "experiments" / "flags" / f"{name}.flags").read_text()


def test_recorded_held_out_dice_matches_the_readme():
  held = json.loads((SHIPPED / "source.json").read_text())["held_out"]
  readme = (SHIPPED.parent / "README.md").read_text()
  assert held["n_cases"] == 16
  assert f"{held['dice_mean']:.3f} ± {held['dice_sd']:.3f}" in readme
