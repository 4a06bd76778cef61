"""Hard predictions (argmax of the sliding-window logits) and the evaluation on them."""

import jax.numpy as jnp
import numpy as np
import pytest

from assft_jax.engine import dice_per_class, evaluate, predict_labels, sliding_window_predict
from assft_jax.models import SegResNetDS
from tests._engine_helpers import fast_variables

C, ROI = 3, (16, 16, 16)


@pytest.fixture(scope="module")
def model():
  module = SegResNetDS(init_filters=4, out_channels=C, blocks_down=(1, 1, 1))
  return module, fast_variables(module, 16, seed=0)


@pytest.fixture(scope="module")
def volumes():
  rng = np.random.default_rng(0)
  shapes = {"a": (16, 16, 16), "big": (20, 16, 24)}
  return {k: rng.normal(size=s + (1,)).astype(np.float32) for k, s in shapes.items()}


def test_predict_labels_are_the_argmax_of_the_forward(model, volumes):
  """One-window case: the argmax of a plain forward; multi-window: of the blended logits."""
  module, variables = model
  labels = predict_labels(module, variables, volumes, ["a", "big"], roi=ROI, sw_batch_size=3)
  direct = module.apply(variables, jnp.asarray(volumes["a"])[None])[0]
  np.testing.assert_array_equal(labels["a"], np.asarray(jnp.argmax(direct, -1)))
  blended = sliding_window_predict(module, variables, volumes["big"], ROI, sw_batch_size=3)
  assert labels["big"].shape == (20, 16, 24) and labels["big"].dtype == np.int32
  np.testing.assert_array_equal(labels["big"], np.asarray(jnp.argmax(blended, -1)))
  assert len(np.unique(labels["big"])) > 1  # not a constant map that any model gives


def test_evaluate_scores_the_predictions(model, volumes):
  module, variables = model

  class Vol:  # a labeled volume as `data.Volume` has it
    def __init__(self, image, label):
      self.image, self.label, self.meta = image, label, {}

  labels = predict_labels(module, variables, volumes, ["a", "big"], roi=ROI)
  gt = {k: np.random.default_rng(1).integers(0, C, size=volumes[k].shape[:3]) for k in labels}
  vols = {k: Vol(volumes[k], gt[k]) for k in labels}
  rep = evaluate(module, variables, vols, ["a", "big"], roi=ROI, num_classes=C)
  for k in ("a", "big"):
    ref = np.nanmean(dice_per_class(labels[k], gt[k], C))
    np.testing.assert_allclose(rep["per_case"][k]["mean"], ref)


def test_evaluate_writes_nifti_in_source_geometry(tmp_path):
  """Phantom MSD case -> prepare (fixed crop) -> evaluate(out_dir): the written labels
  have the source image's shape and affine."""
  import nibabel as nib

  from assft_jax.data import PreprocessConfig, load_index, prepare
  from assft_jax.data.phantom import generate

  root = generate(tmp_path / "ph", "ct", 1, (20, 24, 18), seed=0)
  ds = load_index(root)
  vols = prepare(ds, PreprocessConfig(crop_size=(16, 16, 16)), tmp_path / "cache")
  n_cls = len(ds.class_names)
  module = SegResNetDS(init_filters=4, out_channels=n_cls, blocks_down=(1, 1, 1))
  variables = fast_variables(module, 16)
  cid = ds.cases[0].id
  rep = evaluate(
    module,
    variables,
    vols,
    [cid],
    roi=ROI,
    num_classes=n_cls,
    class_names=ds.class_names,
    out_dir=tmp_path / "pred",
  )
  assert set(rep["per_class"]) == set(ds.class_names[1:])
  src = nib.load(str(ds.cases[0].image))
  out = nib.load(str(tmp_path / "pred" / f"{cid}.nii.gz"))
  assert out.shape == src.shape[:3]
  np.testing.assert_allclose(out.affine, src.affine, atol=1e-5)
