"""Parity of the Flax SegResNet family with MONAI 1.6.1 (the reference), <= 1e-4 max abs.

Random weights with non-trivial norm parameters and running stats; every conv impl.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
import torch  # the reference: a declared test dependency, so missing it fails

from assft_jax.models import SegResEncoder, SegResNetDS, model_config
from assft_jax.models.layers import DownConv, UpConv
from assft_jax.models.segresnet import SegResBlock
from tests._torch_reference import (
  TOL,
  max_abs,
  monai_net,
  randomise,
  state_dict_np,
  to_first,
  to_last,
  volume,
)
from weights_port.mapping import (
  CONV_PERM,
  DECONV_PERM,
  Entry,
  block_entries,
  port,
  to_flax,
)

pytestmark = pytest.mark.torch
ONEDNN = pytest.param("onednn", marks=pytest.mark.onednn)
IMPLS = ("native", "s2d", ONEDNN)
SMALL = dict(init_filters=4, in_channels=1, blocks_down=(1, 2, 2, 4, 4))


def _stats_diff(flax_stats, torch_sd, cfg) -> float:
  ref = to_flax(torch_sd, cfg)["batch_stats"]
  return max(jax.tree.leaves(jax.tree.map(max_abs, dict(flax_stats), ref)))


@pytest.mark.parametrize("impl", IMPLS)
def test_down_conv(impl):
  conv = torch.nn.Conv3d(4, 8, 3, stride=2, padding=1, bias=False)
  x = volume((2, 4, 8, 4, 6), 1)  # non-cubic: catches a swapped spatial axis
  with torch.no_grad():
    ref = conv(torch.from_numpy(x)).numpy()
  v = port({"w": conv.weight.detach().numpy()}, [Entry("w", "params", ("kernel",), CONV_PERM)])
  y = DownConv(8, impl).apply(v, jnp.asarray(to_last(x)))
  assert max_abs(to_first(y), ref) <= TOL


@pytest.mark.parametrize("impl", IMPLS)
def test_up_conv(impl):
  deconv = torch.nn.ConvTranspose3d(8, 4, 3, stride=2, padding=1, output_padding=1, bias=False)
  x = volume((2, 8, 4, 2, 3), 2)
  with torch.no_grad():
    ref = deconv(torch.from_numpy(x)).numpy()
  v = port({"w": deconv.weight.detach().numpy()}, [Entry("w", "params", ("kernel",), DECONV_PERM)])
  y = UpConv(4, impl).apply(v, jnp.asarray(to_last(x)))
  assert y.shape == to_last(ref).shape
  assert max_abs(to_first(y), ref) <= TOL


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("norm", ["batch", "instance", "group"])
@pytest.mark.parametrize("train", [False, True])
def test_segres_block(norm, train, impl):
  from monai.networks.nets.segresnet_ds import SegResBlock as TBlock

  # SegResEncoder/SegResNetDS set affine=True for instance norm; do the same here
  tnorm = {
    "batch": "batch",
    "instance": ("instance", {"affine": True}),
    "group": ("group", {"num_groups": 8}),
  }[norm]
  net = randomise(torch.nn.ModuleDict({"b": TBlock(3, 8, norm=tnorm)}), 3)
  sd0 = state_dict_np(net)
  net.train(train)
  x = volume((2, 8, 6, 4, 8), 4)
  with torch.no_grad():
    ref = net["b"](torch.from_numpy(x)).numpy()
  table = list(block_entries("b", (), norm))
  v = port(sd0, table)
  block = SegResBlock(norm, conv_impl=impl)
  if train and norm == "batch":
    y, upd = block.apply(v, jnp.asarray(to_last(x)), True, mutable=["batch_stats"])
    new = port(state_dict_np(net), table)["batch_stats"]
    assert max(jax.tree.leaves(jax.tree.map(max_abs, dict(upd["batch_stats"]), new))) <= TOL
  else:
    y = block.apply(v, jnp.asarray(to_last(x)), train)
  assert max_abs(to_first(y), ref) <= TOL


@pytest.mark.parametrize("impl", IMPLS)
def test_encoder_maps(impl):
  net = monai_net("encoder", 5, **SMALL)
  x = volume((2, 1, 16, 32, 16), 5)
  with torch.no_grad():
    refs = [r.numpy() for r in net(torch.from_numpy(x))]
  m = SegResEncoder(**SMALL, conv_impl=impl)
  v = to_flax(state_dict_np(net), model_config(m))
  maps = m.apply(v, jnp.asarray(to_last(x)))
  assert len(maps) == len(refs) == 5
  for y, r in zip(maps, refs):
    assert max_abs(to_first(y), r) <= TOL


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dsdepth", [1, 4])
def test_full_eval(impl, dsdepth):
  kw = dict(SMALL, out_channels=3, dsdepth=dsdepth)
  net = monai_net("segresnet", 6, **kw)
  x = volume((2, 1, 32, 32, 32), 6)
  with torch.no_grad():
    ref = net(torch.from_numpy(x)).numpy()
  m = SegResNetDS(**kw, conv_impl=impl)
  y = m.apply(to_flax(state_dict_np(net), model_config(m)), jnp.asarray(to_last(x)))
  assert max_abs(to_first(y), ref) <= TOL


@pytest.mark.parametrize(
  "impl,dsdepth",
  [
    ("native", 4),
    ("s2d", 4),
    ("s2d", 1),
    pytest.param("onednn", 4, marks=pytest.mark.onednn),
    pytest.param("onednn", 1, marks=pytest.mark.onednn),
  ],
)
def test_full_train_and_batch_stats(impl, dsdepth):
  kw = dict(SMALL, out_channels=3, dsdepth=dsdepth)
  net = monai_net("segresnet", 7, **kw)
  sd0 = state_dict_np(net)
  x = volume((2, 1, 16, 16, 32), 7)
  net.train()
  with torch.no_grad():
    ref = net(torch.from_numpy(x))
  refs = [r.numpy() for r in ref] if dsdepth > 1 else [ref.numpy()]
  m = SegResNetDS(**kw, conv_impl=impl)
  cfg = model_config(m)
  out, upd = m.apply(
    to_flax(sd0, cfg), jnp.asarray(to_last(x)), train=True, mutable=["batch_stats"]
  )
  outs = out if dsdepth > 1 else [out]
  assert len(outs) == len(refs) == dsdepth
  for y, r in zip(outs, refs):
    assert max_abs(to_first(y), r) <= TOL
  assert _stats_diff(upd["batch_stats"], state_dict_np(net), cfg) <= TOL


def test_features_match_monai_intermediates():
  kw = dict(SMALL, out_channels=3, dsdepth=2)
  net = monai_net("segresnet", 8, **kw)
  seen = {}
  net.up_layers[-1]["head"].register_forward_hook(lambda mod, i, o: seen.update(h=i[0]))
  x = volume((1, 1, 16, 16, 16), 8)
  with torch.no_grad():
    ref = net(torch.from_numpy(x)).numpy()
    enc = [r.numpy() for r in net.encoder(torch.from_numpy(x))]
  m = SegResNetDS(**kw, conv_impl="s2d")
  v = to_flax(state_dict_np(net), model_config(m))
  logits, feats = m.apply(v, jnp.asarray(to_last(x)), return_features=True)
  assert max_abs(to_first(logits), ref) <= TOL
  assert all(max_abs(to_first(a), b) <= TOL for a, b in zip(feats["enc"], enc))
  assert max_abs(feats["emb"], enc[-1].mean(axis=(2, 3, 4))) <= TOL
  assert feats["head_in"].shape == (1, 16, 16, 16, 4)
  assert max_abs(to_first(feats["head_in"]), seen["h"].numpy()) <= TOL


@pytest.mark.slow
@pytest.mark.parametrize("impl", IMPLS)
def test_ct_fm_config(impl):
  """The real CT-FM widths (32..512) and depths (1,2,2,4,4), small input."""
  kw = dict(init_filters=32, in_channels=1, blocks_down=(1, 2, 2, 4, 4), out_channels=2)
  net = monai_net("segresnet", 9, **kw)
  x = volume((1, 1, 32, 32, 32), 9)
  with torch.no_grad():
    ref = net(torch.from_numpy(x)).numpy()
    enc = [r.numpy() for r in net.encoder(torch.from_numpy(x))]
  m = SegResNetDS(**kw, conv_impl=impl)
  v = to_flax(state_dict_np(net), model_config(m))
  logits, feats = jax.jit(lambda v, x: m.apply(v, x, return_features=True))(
    v, jnp.asarray(to_last(x))
  )
  assert feats["emb"].shape == (1, 512)
  assert all(max_abs(to_first(a), b) <= TOL for a, b in zip(feats["enc"], enc))
  assert max_abs(to_first(logits), ref) <= TOL
