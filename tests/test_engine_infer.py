"""Sliding window == MONAI sliding_window_inference (same predictor on both sides)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from assft_jax.engine.infer import sliding_window, sliding_window_predict

C = 3


def _coords(roi):
  z, y, x = np.meshgrid(*[np.arange(r, dtype=np.float32) / r for r in roi], indexing="ij")
  return z, y, x


def jax_window_fn(variables, win):
  """A position-dependent predictor: each window's output depends on window-local
  coordinates, so wrong placement or blending shows up."""
  z, y, x = _coords(win.shape[1:4])
  v = win[..., 0]
  outs = [jnp.sin(v * (c + 1)) + (c + 1) * z - c * y * x + 0.3 * c for c in range(C)]
  return jnp.stack(outs, -1), {}


def torch_predictor(torch, win):
  z, y, x = (torch.from_numpy(a) for a in _coords(win.shape[2:]))
  v = win[:, 0]
  outs = [torch.sin(v * (c + 1)) + (c + 1) * z - c * y * x + 0.3 * c for c in range(C)]
  return torch.stack(outs, 1)


@pytest.mark.torch
@pytest.mark.parametrize("mode", ["gaussian", "constant"])
@pytest.mark.parametrize(
  "shape,roi,overlap", [((20, 13, 27), (16, 16, 8), 0.5), ((9, 30, 17), (8, 12, 16), 0.25)]
)
def test_matches_monai_function(mode, shape, roi, overlap):
  import torch
  from monai.inferers import sliding_window_inference

  img = np.random.default_rng(0).normal(size=shape + (1,)).astype(np.float32)
  ours, _ = sliding_window(
    jax_window_fn, None, img, roi, overlap=overlap, mode=mode, sw_batch_size=3
  )
  ref = sliding_window_inference(
    torch.from_numpy(img[None, ..., 0][:, None]),
    roi,
    3,
    functools.partial(torch_predictor, torch),
    overlap=overlap,
    mode=mode,
  )
  ref = ref[0].permute(1, 2, 3, 0).numpy()
  assert ours.shape == ref.shape == shape + (C,)
  np.testing.assert_allclose(np.asarray(ours), ref, atol=1e-4, rtol=0)


@pytest.mark.torch
def test_model_matches_monai_inferer():
  import torch
  from monai.inferers import sliding_window_inference

  from assft_jax.models import SegResNetDS
  from tests._engine_helpers import fast_variables

  module = SegResNetDS(init_filters=4, out_channels=C, blocks_down=(1, 1, 1))
  variables = fast_variables(module, 8)
  img = np.random.default_rng(1).normal(size=(13, 20, 10, 1)).astype(np.float32)
  roi = (8, 16, 8)
  ours = sliding_window_predict(
    module, variables, img, roi, overlap=0.5, mode="gaussian", sw_batch_size=2
  )
  fwd = jax.jit(lambda x: module.apply(variables, x))

  def predictor(win):  # NCDHW torch -> the same JAX model -> NCDHW torch
    out = fwd(jnp.asarray(win.permute(0, 2, 3, 4, 1).numpy()))
    return torch.from_numpy(np.array(out)).permute(0, 4, 1, 2, 3)

  ref = sliding_window_inference(
    torch.from_numpy(img[..., 0][None, None]), roi, 2, predictor, overlap=0.5, mode="gaussian"
  )
  np.testing.assert_allclose(
    np.asarray(ours), ref[0].permute(1, 2, 3, 0).numpy(), atol=1e-4, rtol=0
  )
