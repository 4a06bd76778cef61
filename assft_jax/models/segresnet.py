"""CT-FM's network: MONAI `SegResEncoder` / `SegResNetDS` (monai 1.6.1) in Flax linen.

Channels-last: inputs `[B, D, H, W, Cin]`. Parameter tree (mirrors the torch keys, see
weights_port/mapping.py):

  SegResNetDS:  params["encoder"] = SegResEncoder params,
                params["up_layers_{i}"] = {"upsample", "blocks_{j}", "head"?}
  SegResEncoder: {"conv_init", "layers_{i}": {"blocks_{j}": {norm1, conv1, norm2, conv2},
                                              "downsample"?}}

so the pre-trained encoder subtree is `variables[coll]["encoder"]` in both collections.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from assft_jax.models.layers import Conv3, DownConv, UpConv, he_init, make_norm

Dtype = Any


def check_spatial(shape: Sequence[int], levels: int) -> None:
  """Raises ValueError unless D, H, W of `shape` [B, D, H, W, C] divide by 2^(levels-1)."""
  f = 2 ** (levels - 1)
  if len(shape) != 5:
    raise ValueError(f"expected input [B, D, H, W, C] (channels-last 3D), got shape {tuple(shape)}")
  if any(s % f for s in shape[1:4]):
    raise ValueError(
      f"input spatial size {tuple(shape[1:4])} (shape {tuple(shape)}) must be "
      f"divisible by {f} = 2^(levels-1) for {levels} levels"
    )


class SegResBlock(nn.Module):
  """Pre-activation residual block: x + conv2(relu(norm2(conv1(relu(norm1(x))))))."""

  norm: str = "batch"
  dtype: Dtype = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    c = x.shape[-1]
    y = nn.relu(make_norm(self.norm, c, self.dtype, "norm1")(x, **_tr(self.norm, train)))
    y = Conv3(c, self.conv_impl, self.dtype, name="conv1")(y)
    y = nn.relu(make_norm(self.norm, c, self.dtype, "norm2")(y, **_tr(self.norm, train)))
    y = Conv3(c, self.conv_impl, self.dtype, name="conv2")(y)
    return (y + x).astype(self.dtype)


def _tr(norm: str, train: bool) -> dict:
  # only BatchNorm takes a train flag; instance/group norm behave the same in both modes.
  return {"train": train} if norm == "batch" else {}


class EncoderLevel(nn.Module):
  """`n_blocks` SegResBlocks, then (unless last) the stride-2 conv doubling channels.

  Returns (skip [B, D, H, W, C], down [B, D/2, H/2, W/2, 2C] or None).
  """

  n_blocks: int
  downsample: bool
  norm: str = "batch"
  conv_impl: str = "auto"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False):
    for j in range(self.n_blocks):
      x = SegResBlock(self.norm, self.dtype, self.conv_impl, name=f"blocks_{j}")(x, train)
    down = None
    if self.downsample:
      down = DownConv(2 * x.shape[-1], self.conv_impl, self.dtype, name="downsample")(x)
    return x, down


class DecoderLevel(nn.Module):
  """upsample (transposed conv, 2C -> C) + skip, `n_blocks` SegResBlocks, optional head.

  Returns (features [B, D, H, W, C], logits [B, D, H, W, out_channels] or None).
  """

  features: int
  n_blocks: int
  out_channels: int
  with_head: bool
  norm: str = "batch"
  conv_impl: str = "auto"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, skip: jax.Array, train: bool = False):
    x = UpConv(self.features, self.conv_impl, self.dtype, name="upsample")(x)
    x = x + skip.astype(x.dtype)
    for j in range(self.n_blocks):
      x = SegResBlock(self.norm, self.dtype, self.conv_impl, name=f"blocks_{j}")(x, train)
    logits = None
    if self.with_head:
      logits = nn.Conv(
        self.out_channels,
        (1, 1, 1),
        use_bias=True,
        dtype=self.dtype,
        param_dtype=jnp.float32,
        kernel_init=he_init,
        name="head",
      )(x)
    return x, logits


def _maybe_remat(cls, remat: bool):
  # self=0, x=1, (skip=2,) train=last: train must be static for the python branches.
  if not remat:
    return cls
  return nn.remat(cls, static_argnums=(3,) if cls is DecoderLevel else (2,))


class SegResEncoder(nn.Module):
  """MONAI SegResEncoder: x [B, D, H, W, Cin] -> list of `len(blocks_down)` maps,
  map i is [B, D/2^i, H/2^i, W/2^i, init_filters * 2^i]."""

  init_filters: int = 32
  in_channels: int = 1
  blocks_down: Sequence[int] = (1, 2, 2, 4, 4)
  norm: str = "batch"
  conv_impl: str = "auto"
  dtype: Dtype = jnp.float32
  remat: bool = False

  def setup(self):
    self.conv_init = Conv3(self.init_filters, self.conv_impl, self.dtype, name="conv_init")
    level = _maybe_remat(EncoderLevel, self.remat)
    n = len(self.blocks_down)
    self.layers = [
      level(nb, i < n - 1, self.norm, self.conv_impl, self.dtype)
      for i, nb in enumerate(self.blocks_down)
    ]

  def __call__(self, x: jax.Array, train: bool = False) -> list[jax.Array]:
    check_spatial(x.shape, len(self.blocks_down))
    if x.shape[-1] != self.in_channels:
      raise ValueError(
        f"input has {x.shape[-1]} channels (shape {tuple(x.shape)}), the "
        f"model expects in_channels={self.in_channels}"
      )
    x = self.conv_init(x.astype(self.dtype))
    outputs = []
    for layer in self.layers:
      skip, x = layer(x, train)
      outputs.append(skip)
    return outputs


class SegResNetDS(nn.Module):
  """MONAI SegResNetDS (upsample_mode="deconv", isotropic), channels-last.

  __call__(x [B, D, H, W, Cin], train=False, return_features=False):
    logits [B, D, H, W, out_channels]; a list (full resolution first, then halves) when
    `train and dsdepth > 1`. With return_features, `(logits, feats)` where
    feats = {"enc": [len(blocks_down) encoder maps], "emb": [B, F] float32 global average
    pool of the last encoder map, "head_in": [B, D, H, W, init_filters] input of the
    final 1x1x1 head} from the same forward pass.
  """

  init_filters: int = 32
  in_channels: int = 1
  out_channels: int = 2
  blocks_down: Sequence[int] = (1, 2, 2, 4, 4)
  blocks_up: Sequence[int] | None = None
  dsdepth: int = 1
  norm: str = "batch"
  conv_impl: str = "auto"
  dtype: Dtype = jnp.float32
  remat: bool = False

  def setup(self):
    n_up = len(self.blocks_down) - 1
    if n_up < 1:
      raise ValueError(f"blocks_down needs at least 2 levels, got {self.blocks_down}")
    blocks_up = tuple(self.blocks_up) if self.blocks_up is not None else (1,) * n_up
    if len(blocks_up) != n_up:
      raise ValueError(f"blocks_up {blocks_up} must have len(blocks_down) - 1 = {n_up} entries")
    self.encoder = SegResEncoder(
      self.init_filters,
      self.in_channels,
      tuple(self.blocks_down),
      self.norm,
      self.conv_impl,
      self.dtype,
      self.remat,
    )
    level = _maybe_remat(DecoderLevel, self.remat)
    dsdepth = max(self.dsdepth, 1)
    self.up_layers = [
      level(
        self.init_filters * 2 ** (n_up - 1 - i),
        blocks_up[i],
        self.out_channels,
        n_up - i <= dsdepth,
        self.norm,
        self.conv_impl,
        self.dtype,
      )
      for i in range(n_up)
    ]

  def encode(self, x: jax.Array, train: bool = False) -> list[jax.Array]:
    """The encoder maps only (see SegResEncoder)."""
    return self.encoder(x, train)

  def __call__(self, x: jax.Array, train: bool = False, return_features: bool = False):
    enc = self.encoder(x, train)
    x = enc[-1]
    outputs = []
    for layer, skip in zip(self.up_layers, enc[-2::-1]):
      x, logits = layer(x, skip, train)
      if logits is not None:
        outputs.append(logits)
    head_in = x  # the last level's features feed the full-resolution head
    outputs.reverse()
    out = outputs if (train and len(outputs) > 1) else outputs[0]
    if not return_features:
      return out
    emb = jnp.mean(enc[-1].astype(jnp.float32), axis=(1, 2, 3))
    return out, {"enc": enc, "emb": emb, "head_in": head_in}


def build_model(config: dict) -> nn.Module:
  """Module from a config dict (model.json). `arch`: "segresnet" (default) | "encoder"."""
  cfg = dict(config)
  arch = cfg.pop("arch", "segresnet")
  if "dtype" in cfg and isinstance(cfg["dtype"], str):
    cfg["dtype"] = jnp.dtype(cfg["dtype"])
  for k in ("blocks_down", "blocks_up"):
    if cfg.get(k) is not None:
      cfg[k] = tuple(int(b) for b in cfg[k])
  if arch == "encoder":
    for k in ("out_channels", "blocks_up", "dsdepth"):
      cfg.pop(k, None)
    return SegResEncoder(**cfg)
  if arch == "segresnet":
    return SegResNetDS(**cfg)
  raise ValueError(f"unknown arch {arch!r}: expected 'segresnet' or 'encoder'")


def model_config(module: nn.Module) -> dict:
  """JSON-able config that `build_model` turns back into an equal module."""
  cfg = {
    "arch": "encoder" if isinstance(module, SegResEncoder) else "segresnet",
    "init_filters": module.init_filters,
    "in_channels": module.in_channels,
    "blocks_down": list(module.blocks_down),
    "norm": module.norm,
    "conv_impl": module.conv_impl,
    "dtype": jnp.dtype(module.dtype).name,
    "remat": module.remat,
  }
  if isinstance(module, SegResNetDS):
    cfg.update(
      out_channels=module.out_channels,
      dsdepth=module.dsdepth,
      blocks_up=None if module.blocks_up is None else list(module.blocks_up),
    )
  return cfg


def abstract_variables(module: nn.Module, spatial: Sequence[int] | int | None = None) -> dict:
  """Shapes/dtypes (jax.ShapeDtypeStruct) of `module`'s variables, without computing them."""
  if spatial is None:
    spatial = 2 ** (len(module.blocks_down) - 1)
  if isinstance(spatial, int):
    spatial = (spatial,) * 3
  x = jax.ShapeDtypeStruct((1, *spatial, module.in_channels), jnp.float32)
  return dict(jax.eval_shape(lambda x: module.init(jax.random.key(0), x, train=False), x))


def init_variables(
  module: nn.Module, rng: jax.Array, spatial: Sequence[int] | int | None = None
) -> dict:
  """Fresh {"params", "batch_stats"?}: He-normal kernels (std sqrt(2 / fan_in), the paper's
  Kaiming init), zero biases, unit norm scales, running mean 0 / var 1.

  Drawn on the host with numpy, seeded from `rng`: on XLA:CPU every jax.random call
  compiles threefry anew for each parameter shape, which makes `module.init` slow even
  for a tiny net. Same distributions as the modules' own initialisers.
  `spatial` only has to pass the divisibility check; the parameters do not depend on it.
  """
  shapes = abstract_variables(module, spatial)
  data = jax.random.key_data(rng) if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) else rng
  gen = np.random.default_rng(np.asarray(data, np.uint32).ravel().tolist())

  def draw(path, leaf):
    name = path[-1].key
    if name == "kernel":
      std = np.sqrt(2.0 / np.prod(leaf.shape[:-1]))
      return jnp.asarray(gen.standard_normal(leaf.shape, np.float32) * std)
    if name in ("bias", "mean"):
      return jnp.zeros(leaf.shape, leaf.dtype)
    if name in ("scale", "var"):
      return jnp.ones(leaf.shape, leaf.dtype)
    raise ValueError(f"init_variables: no initialiser for {jax.tree_util.keystr(path)}")

  return {k: jax.tree_util.tree_map_with_path(draw, v) for k, v in shapes.items()}
