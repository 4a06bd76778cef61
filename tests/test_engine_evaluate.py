"""Per-case Dice and the summary against sklearn's F1 (= Dice for one class)."""

import numpy as np
from sklearn.metrics import f1_score

from assft_jax.engine.evaluate import dice_per_class, summarize


def test_dice_per_class_vs_sklearn_and_exclusion():
  rng = np.random.default_rng(0)
  C = 4
  label = rng.integers(0, 3, size=(6, 7, 8))  # class 3 absent from the label
  pred = rng.integers(0, 3, size=(6, 7, 8))  # ... and from the prediction
  d = dice_per_class(pred, label, C)
  for c in (1, 2):
    ref = f1_score((label == c).ravel(), (pred == c).ravel())
    np.testing.assert_allclose(d[c - 1], ref, rtol=1e-12)
  assert np.isnan(d[2])  # absent in both: excluded, not 1 or 0


def test_summary_mean_sd_per_class():
  per_class = np.array([[0.5, np.nan], [0.9, 0.7], [np.nan, np.nan]])
  rep = summarize(per_class, ["a", "b", "c"], class_names=["bg", "liver", "spleen"])
  case_means = np.array([0.5, 0.8])
  assert rep["n_cases"] == 2
  np.testing.assert_allclose(rep["mean"], case_means.mean())
  np.testing.assert_allclose(rep["sd"], np.std(case_means, ddof=1))
  np.testing.assert_allclose(rep["per_class"]["liver"], 0.7)
  assert rep["per_case"]["c"]["mean"] is None
