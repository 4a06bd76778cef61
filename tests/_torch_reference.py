"""Helpers shared by the model and weight-port parity tests (no tests here).

MONAI networks with random weights *and* non-trivial norm parameters / running stats, so
that a wrong BatchNorm mapping (mean/var swapped, eps, momentum) cannot pass by accident.
"""

from __future__ import annotations

import numpy as np

TOL = 1e-4  # max abs, float32; never loosened


def randomise(net, seed: int = 0):
  """Random norm affine params and running stats (in place); returns net."""
  import torch

  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in net.named_parameters():
      if ".norm" in f".{name}" and name.endswith("weight"):
        p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
      elif ".norm" in f".{name}" and name.endswith("bias"):
        p.copy_(0.3 * torch.randn(p.shape, generator=g))
      elif name.endswith("head.bias"):
        p.copy_(0.3 * torch.randn(p.shape, generator=g))
    for name, b in net.named_buffers():
      if name.endswith("running_mean"):
        b.copy_(0.5 * torch.randn(b.shape, generator=g))
      elif name.endswith("running_var"):
        b.copy_(0.5 + torch.rand(b.shape, generator=g))
  return net


def monai_net(kind: str, seed: int = 0, **kw):
  """Randomised MONAI SegResNetDS ("segresnet") or SegResEncoder ("encoder"), eval mode."""
  import torch
  from monai.networks.nets.segresnet_ds import SegResEncoder, SegResNetDS

  torch.manual_seed(seed)
  cls = SegResNetDS if kind == "segresnet" else SegResEncoder
  return randomise(cls(spatial_dims=3, **kw), seed + 1).eval()


def state_dict_np(net) -> dict[str, np.ndarray]:
  return {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}


def volume(shape, seed: int = 0) -> np.ndarray:
  """Random NCDHW float32 input."""
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def to_last(a) -> np.ndarray:
  """NCDHW -> NDHWC."""
  return np.moveaxis(np.asarray(a), 1, -1)


def to_first(a) -> np.ndarray:
  """NDHWC -> NCDHW."""
  return np.moveaxis(np.asarray(a), -1, 1)


def max_abs(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
