"""Per-case Dice and the summary against sklearn's F1 (= Dice for one class)."""

import numpy as np
import pytest
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


def test_evaluate_adds_hd95_and_nsd_on_the_volume_spacing():
  """evaluate(nsd_tolerance_mm=...) against the brute-force rewrite on its own predictions,
  with the spacing of each volume's meta; one-sided classes are counted, not averaged."""
  from assft_jax.data import Volume
  from assft_jax.engine import evaluate, predict_labels
  from assft_jax.models import SegResNetDS
  from tests._engine_helpers import fast_variables
  from tests._surface_reference import blob_labels, brute_metrics

  C, roi = 3, (8, 8, 8)
  module = SegResNetDS(init_filters=4, out_channels=C, blocks_down=(1, 1, 1))
  variables = fast_variables(module, 8, seed=0)
  rng = np.random.default_rng(2)
  spacing = {"a": (0.8, 1.0, 2.5), "b": (1.5, 1.5, 1.0)}
  images = {k: rng.normal(size=(8, 8, 8, 1)).astype(np.float32) for k in spacing}
  labels = {k: blob_labels(rng, (8, 8, 8), C) for k in spacing}
  labels["b"][labels["b"] == 2] = 0  # class 2 absent from b's ground truth
  vols = {k: Volume(images[k], labels[k], {"spacing": list(spacing[k])}) for k in spacing}
  rep = evaluate(module, variables, vols, ["a", "b"], roi=roi, num_classes=C, nsd_tolerance_mm=2.0)
  preds = predict_labels(module, variables, images, ["a", "b"], roi=roi)
  hd, nsd, one_sided = {}, {}, 0
  for k in ("a", "b"):
    ref = [brute_metrics(preds[k] == c, labels[k] == c, spacing[k], 2.0) for c in (1, 2)]
    hd[k], nsd[k] = np.array(ref).T
    one_sided += sum((preds[k] == c).any() != (labels[k] == c).any() for c in (1, 2))
    assert rep["hd95"]["per_case"][k]["hd95"]["class1"] == pytest.approx(hd[k][0], nan_ok=True)
    assert rep["nsd"]["per_case"][k]["nsd"]["class2"] == pytest.approx(nsd[k][1], nan_ok=True)
  assert np.isfinite([hd["a"][0], hd["b"][0]]).any()  # something was measured
  case_hd = [np.nanmean(hd[k]) for k in ("a", "b") if not np.isnan(hd[k]).all()]
  np.testing.assert_allclose(rep["hd95"]["mean"], np.mean(case_hd), rtol=1e-12)
  np.testing.assert_allclose(rep["nsd"]["mean"], np.mean([np.nanmean(nsd[k]) for k in "ab"]))
  assert (
    one_sided > 0 and rep["hd95"]["n_one_sided"] == one_sided and rep["nsd"]["tolerance_mm"] == 2.0
  )
  assert "hd95" not in evaluate(module, variables, vols, ["a"], roi=roi, num_classes=C)
