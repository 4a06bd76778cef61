"""The oneDNN conv extension (conv_impl "onednn"): built by the venv step, exact against
XLA's native convs (forward and both gradients), safe to run from several threads, the
default on one CPU device, and a clear error or the XLA path where it cannot run. MONAI
parity of whole networks on it is in test_models_parity.py (IMPLS).

Where the extension is unavailable, test_the_extension_is_built_for_this_environment
fails and says why; the tests marked `onednn` are skipped (tests/conftest.py)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

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
  # where that failed runs the XLA path, and this test says why.
  if why := onednn.why_unavailable():
    pytest.fail(f"the oneDNN conv extension is unavailable: {why}", pytrace=False)


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


@pytest.mark.onednn
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


# Operands of the raw handler that do not make one conv of the kind: each must come back
# as an error naming the mismatch before oneDNN reads or writes a byte.
X = (2, 8, 8, 8, 4)
BAD_CALLS = [
  ("wrong in-channels", (0, 1, 0), X, (3, 3, 3, 5, 6), (2, 8, 8, 8, 6), "channels do not match"),
  ("wrong taps", (0, 1, 0), X, (3, 3, 2, 4, 6), (2, 8, 8, 8, 6), "3x3x3 taps"),
  ("stride-2 out size", (0, 2, 0), X, (3, 3, 3, 4, 6), (2, 8, 8, 8, 6), "spatial size"),
  ("up out size", (1, 2, 1), X, (3, 3, 3, 4, 6), (2, 16, 16, 14, 6), "spatial size"),
  ("up in-channels", (1, 2, 1), X, (3, 3, 3, 6, 4), (2, 16, 16, 16, 6), "channels do not"),
  ("grad batch", (2, 1, 0), X, (1, 8, 8, 8, 6), (3, 3, 3, 4, 6), "batch size"),
  ("grad out-channels", (2, 1, 0), X, (2, 8, 8, 8, 6), (3, 3, 3, 4, 7), "channels do not"),
  ("rank", (0, 1, 0), X, (3, 3, 3, 4), (2, 8, 8, 8, 6), "5-D"),
]


@pytest.mark.onednn
@pytest.mark.parametrize("name,attrs,a,b,out,why", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_mismatched_operands_are_an_error_not_a_crash(name, attrs, a, b, out, why):
  kind, stride, wt = attrs
  with pytest.raises(jax.errors.JaxRuntimeError, match=f"kind {kind} .*{why}") as err:
    onednn._call(kind, stride, wt, jnp.ones(a), jnp.ones(b), out).block_until_ready()
  assert "INVALID_ARGUMENT" in str(err.value) and str(list(b)) in str(err.value)


@pytest.mark.onednn
def test_concurrent_calls_match_one_at_a_time():
  """The cached primitives run from several threads at once (Python threads; a jitted
  function's independent convs, which XLA may run at once) give the results of one call
  at a time: the handler locks only its cache, and each call has its own scratchpad."""
  rng = np.random.default_rng(1)
  xs = jnp.asarray(rng.normal(size=(4, 2, 12, 12, 12, 8)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, 3, 8, 8)) * 0.1, jnp.float32)

  def one(x, k):
    def loss(x, k):
      y = onednn.up_conv(onednn.down_conv(onednn.conv3(x, k), k), k)
      return jnp.sum(y * y)

    return jax.grad(loss, (0, 1))(x, k)

  one_jit = jax.jit(one)
  want = [jax.device_get(one_jit(x, k)) for x in xs]
  # XLA may run the four independent chains of one program at once.
  together = jax.device_get(jax.jit(lambda xs, k: [one(x, k) for x in xs])(xs, k))
  # Python threads: jitted calls release the GIL while they run.
  with ThreadPoolExecutor(4) as pool:
    threaded = list(pool.map(lambda i: jax.device_get(one_jit(xs[i % 4], k)), range(16)))
  for i, (dx, dk) in enumerate(together + threaded):
    for g, w in zip((dx, dk), want[i % 4]):
      np.testing.assert_allclose(g, w, rtol=0, atol=REL * float(np.max(np.abs(w))))


@pytest.mark.onednn
def test_repeated_train_steps_match_the_xla_path():
  """Three train steps of a small network: losses, parameters and BatchNorm statistics as
  on the s2d path. This also holds the extension to repeated calls of each cached
  primitive (a weight-gradient primitive's second call is where a shared scratchpad
  breaks)."""
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


@pytest.mark.onednn
def test_auto_picks_onednn_on_one_cpu_device_for_float32_only():
  assert layers.resolve_conv_impl("auto") == "onednn"
  assert layers.resolve_conv_impl("auto", jnp.bfloat16) == "s2d"
  with pytest.raises(ValueError, match="float32 only"):
    layers.resolve_conv_impl("onednn", jnp.bfloat16)
  with pytest.raises(ValueError, match="must be one of"):
    layers.resolve_conv_impl("mkldnn")


def test_without_the_extension_auto_keeps_xla_and_onednn_says_why(monkeypatch):
  why = "not built for this environment: python -m assft_jax.models.onednn_build"
  monkeypatch.setattr(onednn, "why_unavailable", lambda: why)
  assert layers.resolve_conv_impl("auto") == "s2d"
  with pytest.raises(ValueError, match="not built for this environment: python -m"):
    layers.resolve_conv_impl("onednn")


@pytest.fixture
def fake_prefix(monkeypatch, tmp_path):
  """An x86-64 Linux environment whose prefix holds both oneDNN wheels (as empty files),
  and an empty build folder: each test below takes one piece away."""
  prefix = tmp_path / "prefix"
  (prefix / "include").mkdir(parents=True)
  (prefix / "lib").mkdir()
  (prefix / "include" / "dnnl.hpp").write_text("")
  (prefix / "lib" / "libdnnl.so.3").write_text("")
  monkeypatch.setattr(onednn_build, "_PREFIX", prefix)
  monkeypatch.setattr(onednn_build, "_platform", lambda: ("linux", "x86_64"))
  monkeypatch.setenv("ASSFT_ONEDNN_DIR", str(tmp_path / "build"))
  monkeypatch.setenv("CXX", "sh")  # any program on PATH passes for the compiler here
  return prefix


def test_why_unavailable_names_what_is_missing(fake_prefix, monkeypatch):
  why = onednn_build.why_unavailable
  assert why().startswith("not built for this environment")
  assert "python -m assft_jax.models.onednn_build" in why()
  monkeypatch.setenv("CXX", "no-such-compiler-xyz")
  assert why().startswith("no C++ compiler (g++, or $CXX) on PATH")
  (fake_prefix / "include" / "dnnl.hpp").unlink()
  assert why().startswith("the onednn-devel-cpu-gomp wheel (oneDNN's headers) is not installed")
  (fake_prefix / "lib" / "libdnnl.so.3").unlink()
  assert why().startswith("the onednn-cpu-gomp wheel (oneDNN's library) is not installed")
  assert "pip install 'assft-jax[cpu]'" in why()
  monkeypatch.setattr(onednn_build, "_platform", lambda: ("darwin", "arm64"))
  assert why() == "the oneDNN wheels are for x86-64 Linux only, and this is darwin arm64"
  # A build there is all it asks for; whether it loads is onednn.why_unavailable's part.
  onednn_build.library_path().parent.mkdir(parents=True)
  onednn_build.library_path().write_text("")
  assert why() is None


def test_build_without_a_compiler_says_so_and_exits_1(fake_prefix, monkeypatch, capsys):
  monkeypatch.setenv("CXX", "no-such-compiler-xyz")
  with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
    onednn_build.build()
  # The venv step carries on (the XLA path works) but must not stamp it as built.
  assert onednn_build.main(["onednn_build"]) == 1
  out = capsys.readouterr().out
  assert "XLA conv path stays in use: no C++ compiler" in out and out.count("\n") == 1
  assert not onednn_build.library_path().parent.exists()  # nothing half-written


@pytest.mark.onednn
def test_build_writes_one_library_named_by_its_inputs(monkeypatch, tmp_path):
  monkeypatch.setenv("ASSFT_ONEDNN_DIR", str(tmp_path))
  (tmp_path / "libassft_onednn-0000000000000000.so").write_text("a stale build")
  path = onednn_build.build()
  assert path == onednn_build.library_path() and path.parent == tmp_path
  assert [p.name for p in tmp_path.iterdir()] == [path.name]  # the stale one is gone
  assert path.stat().st_size > 0
