"""The oneDNN conv extension (conv_impl "onednn"): built by the venv step, exact against
XLA's native convs (forward and both gradients), the default on one CPU device, and a
clear error or the XLA path where it cannot run. MONAI parity of whole networks on it is
in test_models_parity.py (IMPLS)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from assft_jax.engine import create_state, make_mesh, make_train_step
from assft_jax.engine.train import shard_batch
from assft_jax.models import SegResNetDS, init_variables, layers, onednn, onednn_build
from assft_jax.models.layers import UpConv

# oneDNN and XLA sum the same products in another order: float32 rounding, measured
# 1e-7..7e-7 of the largest value on these shapes.
REL = 1e-5


def test_the_extension_is_built_for_this_environment():
  # `make venv` / `make test` build it (assft_jax/models/onednn_build.py); a machine
  # where that failed runs the XLA path, and this test says so.
  assert onednn.available(), f"not built or does not load: {onednn_build.library_path()}"


def _native_conv(stride):
  def f(x, k):
    return jax.lax.conv_general_dilated(
      x, k, (stride,) * 3, ((1, 1),) * 3, dimension_numbers=("NDHWC", "DHWIO", "NDHWC")
    )

  return f


def _native_up(x, k):
  return UpConv(k.shape[-1], "native").apply({"params": {"kernel": k}}, x)


CASES = [
  ("conv3", onednn.conv3, _native_conv(1), (2, 8, 8, 8, 4), 5),
  ("conv3", onednn.conv3, _native_conv(1), (1, 6, 10, 12, 3), 7),  # non-cubic
  ("conv3", onednn.conv3, _native_conv(1), (2, 16, 16, 16, 32), 32),  # brgconv's width
  ("down", onednn.down_conv, _native_conv(2), (2, 8, 8, 8, 4), 6),
  ("down", onednn.down_conv, _native_conv(2), (1, 7, 9, 5, 3), 6),  # odd sizes
  ("up", onednn.up_conv, _native_up, (2, 4, 4, 4, 6), 5),
  ("up", onednn.up_conv, _native_up, (1, 3, 5, 4, 3), 4),
]


@pytest.mark.parametrize("name,ours,ref,shape,out", CASES)
def test_forward_and_both_gradients_match_xla(name, ours, ref, shape, out):
  rng = np.random.default_rng(sum(shape))
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, 3, shape[-1], out)) * 0.1, jnp.float32)
  want = ref(x, k)
  got = jax.jit(ours)(x, k)
  assert got.shape == want.shape
  ct = jnp.asarray(rng.normal(size=want.shape), jnp.float32)

  def grads(f):
    return jax.jit(jax.grad(lambda a, b: jnp.sum(f(a, b) * ct), (0, 1)))(x, k)

  for g, w in zip((got, *grads(ours)), (want, *grads(ref))):
    scale = float(jnp.max(jnp.abs(w)))
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=0, atol=REL * scale)


def test_repeated_train_steps_match_the_xla_path():
  """Three train steps of a small network: losses, parameters and BatchNorm statistics as
  on the s2d path. The
  extension's first build crashed here (oneDNN's global scratchpad, on the second call
  of a cached weight-gradient primitive), so this also holds it to repeated calls."""
  arch = dict(in_channels=1, out_channels=3, init_filters=8, blocks_down=(1, 2, 2))
  rng = np.random.default_rng(0)
  batch = {
    "image": rng.normal(size=(2, 16, 16, 16, 1)).astype(np.float32),
    "label": rng.integers(0, 3, (2, 16, 16, 16)).astype(np.int32),
  }
  out = {}
  for impl in ("onednn", "s2d"):
    module = SegResNetDS(**arch, conv_impl=impl)
    tx = optax.sgd(1e-2)  # linear in the gradient: Adam would amplify float32 noise
    mesh = make_mesh()
    step = make_train_step(module, tx, mesh, 3)
    state = create_state(init_variables(module, jax.random.key(0)), tx)
    losses = []
    for i in range(3):
      state, metrics = step(state, shard_batch(batch, mesh), jax.random.key(i))
      losses.append(float(metrics["loss"]))
    out[impl] = losses, (state["params"], state["batch_stats"])
  (l1, p1), (l2, p2) = out["onednn"], out["s2d"]
  np.testing.assert_allclose(l1, l2, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-5)


def test_auto_picks_onednn_on_one_cpu_device_for_float32_only():
  assert layers.resolve_conv_impl("auto") == "onednn"
  assert layers.resolve_conv_impl("auto", jnp.bfloat16) == "s2d"
  with pytest.raises(ValueError, match="float32 only"):
    layers.resolve_conv_impl("onednn", jnp.bfloat16)
  with pytest.raises(ValueError, match="must be one of"):
    layers.resolve_conv_impl("mkldnn")


def test_without_the_extension_auto_keeps_xla_and_onednn_says_how_to_build(monkeypatch):
  monkeypatch.setattr(onednn, "available", lambda: False)
  assert layers.resolve_conv_impl("auto") == "s2d"
  with pytest.raises(ValueError, match="onednn_build"):
    layers.resolve_conv_impl("onednn")


def test_build_without_a_compiler_says_so(monkeypatch, tmp_path, capsys):
  monkeypatch.setenv("ASSFT_ONEDNN_DIR", str(tmp_path))
  monkeypatch.setenv("CXX", "no-such-compiler-xyz")
  with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
    onednn_build.build()
  # The venv step must not fail on such a machine: it prints why and exits 0.
  assert onednn_build.main(["onednn_build"]) == 0
  assert "XLA conv path stays in use" in capsys.readouterr().out
  assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_build_writes_one_library_named_by_its_inputs(monkeypatch, tmp_path):
  monkeypatch.setenv("ASSFT_ONEDNN_DIR", str(tmp_path))
  (tmp_path / "libassft_onednn-0000000000000000.so").write_text("a stale build")
  path = onednn_build.build()
  assert path == onednn_build.library_path() and path.parent == tmp_path
  assert [p.name for p in tmp_path.iterdir()] == [path.name]  # the stale one is gone
  assert path.stat().st_size > 0
