"""JAX-only behaviour of assft_jax.models: impl equivalence, remat, errors, checkpoints."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from assft_jax.models import (
  CheckpointError,
  SegResEncoder,
  SegResNetDS,
  build_model,
  init_variables,
  load_pretrained,
  model_config,
  save_pretrained,
)

TINY = dict(init_filters=4, in_channels=1, blocks_down=(1, 1, 2), out_channels=3)


def _x(shape=(2, 8, 8, 16, 1), seed=0):
  return jax.random.normal(jax.random.key(seed), shape)


def _diff(a, b) -> float:
  return max(
    jax.tree.leaves(
      jax.tree.map(lambda u, v: float(jnp.max(jnp.abs(jnp.asarray(u, jnp.float32) - v))), a, b)
    )
  )


def test_conv_impls_and_remat_agree_in_value_and_gradient():
  """native vs s2d (exact rewrite) and remat on/off: same loss and same gradients."""
  x = _x()
  base = SegResNetDS(**TINY, dsdepth=2, conv_impl="native")
  v = init_variables(base, jax.random.key(1), 8)

  def loss(module, params):
    outs, _ = module.apply({**v, "params": params}, x, train=True, mutable=["batch_stats"])
    return sum(jnp.mean(o**2) for o in outs)

  ref_l, ref_g = jax.jit(jax.value_and_grad(lambda p: loss(base, p)))(v["params"])
  for kw in (dict(conv_impl="s2d"), dict(conv_impl="native", remat=True)):
    m = SegResNetDS(**TINY, dsdepth=2, **kw)
    val, g = jax.jit(jax.value_and_grad(lambda p, m=m: loss(m, p)))(v["params"])
    assert abs(float(val - ref_l)) <= 1e-4 * max(1.0, abs(float(ref_l)))
    assert _diff(g, ref_g) <= 1e-4 * max(
      1.0, max(float(jnp.abs(a).max()) for a in jax.tree.leaves(ref_g))
    )


@pytest.mark.parametrize("cin,cout", [(4, 8), (32, 32), (40, 64)])
def test_s2d_conv_gradient_equals_native_on_both_backward_paths(cin, cout):
  """The s2d 3x3x3 conv has two backwards (its own per-tap one from
  TAP_GRAD_MIN_CHANNELS channels, XLA's below): each gives the native conv's value and
  input and kernel gradients, and the wide case really runs the custom one."""
  from assft_jax.models import layers

  x = jax.random.normal(jax.random.key(0), (2, 4, 6, 4, cin))
  k = jax.random.normal(jax.random.key(1), (3, 3, 3, cin, cout)) / np.sqrt(27 * cin)
  g = jax.random.normal(jax.random.key(2), (2, 4, 6, 4, cout))

  def vjp(impl):
    y, back = jax.vjp(lambda xx, kk: layers.conv3d(xx, kk, impl), x, k)
    return (y, *back(g))

  custom = "custom_vjp" in str(jax.make_jaxpr(lambda xx: layers.conv3d(xx, k, "s2d"))(x))
  assert custom == (min(cin, cout) >= layers.TAP_GRAD_MIN_CHANNELS)
  for got, ref in zip(jax.jit(lambda: vjp("s2d"))(), jax.jit(lambda: vjp("native"))()):
    assert float(jnp.max(jnp.abs(got - ref))) <= 1e-5 * float(jnp.max(jnp.abs(ref)))


def test_s2d_conv_backward_holds_few_copies_of_its_input():
  """The custom backward's kernel gradient keeps one shifted copy of the input live, not
  one per tap: as 27 unrolled GEMMs XLA keeps every shifted copy live, and the train step
  at CT-FM's width (if32, 96^3) runs out of memory. Its compiled scratch stays under 12
  input sizes (the unrolled form holds more than twice that)."""
  from assft_jax.models import layers

  c = layers.TAP_GRAD_MIN_CHANNELS
  x = jax.random.normal(jax.random.key(0), (2, 24, 24, 24, c))
  k = jax.random.normal(jax.random.key(1), (3, 3, 3, c, c)) / np.sqrt(27 * c)
  g = jax.random.normal(jax.random.key(2), (2, 24, 24, 24, c))
  back = jax.jit(lambda a, b, ct: jax.vjp(lambda u, v: layers.conv3d(u, v, "s2d"), a, b)[1](ct))
  temp = back.lower(x, k, g).compile().memory_analysis().temp_size_in_bytes
  assert temp <= 12 * x.nbytes, (temp, x.nbytes)


def test_eval_returns_single_logits_and_train_a_list():
  m = SegResNetDS(**TINY, dsdepth=2, conv_impl="s2d")
  v = init_variables(m, jax.random.key(0), 4)
  x = _x((1, 8, 8, 8, 1))
  assert m.apply(v, x).shape == (1, 8, 8, 8, 3)
  outs, _ = m.apply(v, x, train=True, mutable=["batch_stats"])
  assert [o.shape[1] for o in outs] == [8, 4]
  maps = m.apply(v, x, method=SegResNetDS.encode)
  assert [a.shape[-1] for a in maps] == [4, 8, 16]


def test_bad_spatial_size_and_channels_are_clear_errors():
  m = SegResNetDS(**TINY)
  v = init_variables(m, jax.random.key(0), 4)
  with pytest.raises(ValueError, match=r"\(8, 6, 8\).*divisible by 4"):
    m.apply(v, jnp.zeros((1, 8, 6, 8, 1)))
  with pytest.raises(ValueError, match="in_channels=1"):
    m.apply(v, jnp.zeros((1, 8, 8, 8, 2)))
  with pytest.raises(ValueError, match="conv_impl"):
    init_variables(SegResNetDS(**TINY, conv_impl="fft"), jax.random.key(0))


def test_bf16_compute_keeps_float32_params():
  m = SegResNetDS(**TINY, dtype=jnp.bfloat16)
  v = init_variables(m, jax.random.key(0), 4)
  assert {a.dtype for a in jax.tree.leaves(v)} == {jnp.dtype(jnp.float32)}
  x = _x((1, 8, 8, 8, 1))
  y = m.apply(v, x)
  assert y.dtype == jnp.bfloat16
  y32 = SegResNetDS(**TINY).apply(v, x)
  # bf16 has an 8-bit mantissa: a few % relative error after ~10 layers is expected
  assert float(jnp.max(jnp.abs(y.astype(jnp.float32) - y32))) <= 0.05 * float(jnp.max(jnp.abs(y32)))


def test_config_round_trip():
  for m in (
    SegResNetDS(**TINY, dsdepth=2, blocks_up=(2, 1), norm="group"),
    SegResEncoder(init_filters=8, blocks_down=(1, 2), norm="instance"),
  ):
    assert build_model(model_config(m)) == m


def test_save_load_round_trip_and_fresh_decoder(tmp_path):
  enc = SegResEncoder(init_filters=8, blocks_down=(1, 1, 1))
  v = init_variables(enc, jax.random.key(3), 4)
  v["batch_stats"] = jax.tree.map(lambda a: a + 0.25, v["batch_stats"])  # non-default
  save_pretrained(tmp_path / "enc", model_config(enc), v)
  save_pretrained(tmp_path / "enc", model_config(enc), v)  # overwrite in place
  m, v2 = load_pretrained(tmp_path / "enc")
  assert m == enc and _diff(v, v2) == 0.0
  full, fv = load_pretrained(tmp_path / "enc", out_channels=5, rng=jax.random.key(7))
  assert isinstance(full, SegResNetDS) and full.out_channels == 5
  assert _diff(fv["params"]["encoder"], v["params"]) == 0.0
  assert _diff(fv["batch_stats"]["encoder"], v["batch_stats"]) == 0.0
  # decoder: He/Kaiming normal, std = sqrt(2 / fan_in), fan_in = 27 * 8
  k = np.asarray(fv["params"]["up_layers_1"]["blocks_0"]["conv1"]["kernel"])
  assert abs(k.std() / np.sqrt(2 / (27 * 8)) - 1) < 0.1
  assert full.apply(fv, _x((1, 4, 4, 4, 1))).shape == (1, 4, 4, 4, 5)
  # a full model with another class count keeps everything but the heads
  save_pretrained(tmp_path / "full", model_config(full), fv)
  m3, v3 = load_pretrained(tmp_path / "full", out_channels=2, conv_impl="native")
  assert m3.out_channels == 2 and m3.conv_impl == "native"
  p3 = dict(v3["params"])
  assert p3["up_layers_1"]["head"]["kernel"].shape[-1] == 2
  assert _diff(p3["up_layers_1"]["upsample"], fv["params"]["up_layers_1"]["upsample"]) == 0.0
  assert sorted(p.name for p in tmp_path.iterdir()) == ["enc", "full"]  # no temp leftovers


def test_load_errors_name_the_directory(tmp_path):
  with pytest.raises(CheckpointError, match="no model.json"):
    load_pretrained(tmp_path)
  (tmp_path / "model.json").write_text("{not json")
  with pytest.raises(CheckpointError, match="invalid JSON"):
    load_pretrained(tmp_path)


def test_load_with_dsdepth_override(tmp_path):
  """dsdepth adds heads (He-initialised from rng, std sqrt(2 / fan_in)) or drops them;
  every other saved variable, the full-resolution head included, is kept bit-exactly."""
  base = SegResNetDS(**TINY, dsdepth=1)
  v = init_variables(base, jax.random.key(2), 4)
  v["batch_stats"] = jax.tree.map(lambda a: a + 0.5, v["batch_stats"])
  save_pretrained(tmp_path / "d1", model_config(base), v)
  m2, v2 = load_pretrained(tmp_path / "d1", dsdepth=2, rng=jax.random.key(9))
  assert m2 == base.clone(dsdepth=2)
  head = v2["params"]["up_layers_0"]["head"]  # the new half-resolution head
  assert head["kernel"].shape == (1, 1, 1, 8, 3) and not np.any(np.asarray(head["bias"]))
  level0 = {k: a for k, a in v2["params"]["up_layers_0"].items() if k != "head"}
  rest = dict(v2, params=dict(v2["params"], up_layers_0=level0))
  assert _diff(rest, v) == 0.0  # without the new head: the saved variables, unchanged
  fresh = init_variables(m2, jax.random.key(9), 4)["params"]["up_layers_0"]["head"]
  assert _diff(head, fresh) == 0.0  # drawn from `rng` by the one initialiser
  wide = load_pretrained(tmp_path / "d1", dsdepth=2, out_channels=64)[1]
  k = np.asarray(wide["params"]["up_layers_0"]["head"]["kernel"])  # [1, 1, 1, 8, 64]
  assert abs(k.std() / np.sqrt(2 / 8) - 1) < 0.15  # 512 draws: ~5 standard errors
  # back down to 1: the extra head is dropped, everything else is the dsdepth-2 model's
  save_pretrained(tmp_path / "d2", model_config(m2), v2)
  m1, v1 = load_pretrained(tmp_path / "d2", dsdepth=1)
  assert m1 == base and jax.tree.structure(v1) == jax.tree.structure(v) and _diff(v1, v) == 0.0
  # an encoder: dsdepth only matters once a decoder is built
  enc = SegResEncoder(init_filters=4, blocks_down=(1, 1, 2))
  save_pretrained(tmp_path / "enc", model_config(enc), init_variables(enc, jax.random.key(0), 4))
  assert load_pretrained(tmp_path / "enc", dsdepth=2)[0] == enc
  full, fv = load_pretrained(tmp_path / "enc", out_channels=3, dsdepth=2)
  assert full.dsdepth == 2
  assert [
    o.shape[1] for o in full.apply(fv, _x((1, 8, 8, 8, 1)), train=True, mutable=["batch_stats"])[0]
  ] == [8, 4]
