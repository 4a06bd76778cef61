"""A pretrained directory -> a MONAI-loadable state_dict (.safetensors), for going back to
MONAI, 3D Slicer or other PyTorch pipelines.

  python -m weights_port.export --src DIR --dst model.safetensors

Load it in PyTorch with
  net = monai.networks.nets.SegResNetDS(spatial_dims=3, **cfg)   # or SegResEncoder
  net.load_state_dict(safetensors.torch.load_file("model.safetensors"), strict=True)
where cfg is printed by this command (init_filters, in_channels, blocks_down, ...).
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import flags

from assft_jax import atomic
from assft_jax.errors import cli_errors
from weights_port.convert import parse
from weights_port.mapping import PortError, to_torch


def export(src: str | Path, dst: str | Path) -> dict:
  """Writes the MONAI state_dict of the model in `src` to `dst` (atomic); returns MONAI kwargs."""
  import safetensors.numpy

  from assft_jax.models import load_pretrained, model_config

  module, variables = load_pretrained(src)
  cfg = model_config(module)
  sd = to_torch(variables, cfg)
  dst = Path(dst)
  if dst.suffix != ".safetensors":
    raise PortError(f"--dst {dst}: expected a .safetensors file name")
  with atomic.atomic_path(dst, suffix=".safetensors") as tmp:
    safetensors.numpy.save_file(sd, tmp, metadata={"format": "pt"})
  return monai_kwargs(cfg)


def monai_kwargs(cfg: dict) -> dict:
  """Constructor kwargs of the matching MONAI network (SegResNetDS or SegResEncoder)."""
  kw = {
    "spatial_dims": 3,
    "init_filters": cfg["init_filters"],
    "in_channels": cfg["in_channels"],
    "blocks_down": tuple(cfg["blocks_down"]),
    "norm": cfg["norm"] if cfg["norm"] != "group" else ("group", {"num_groups": 8}),
  }
  if cfg["arch"] == "segresnet":
    kw.update(
      out_channels=cfg["out_channels"],
      dsdepth=cfg["dsdepth"],
      blocks_up=None if cfg.get("blocks_up") is None else tuple(cfg["blocks_up"]),
    )
  return kw


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv if argv is None else argv)
  fv = flags.FlagValues()
  flags.DEFINE_string("src", None, "pretrained directory (model.json + variables)", flag_values=fv)
  flags.DEFINE_string("dst", None, "output .safetensors file", flag_values=fv)
  parse(argv, fv, ("src", "dst"))
  with cli_errors():
    kw = export(fv.src, fv.dst)
  print(f"wrote {fv.dst}: MONAI {'SegResNetDS' if 'out_channels' in kw else 'SegResEncoder'}({kw})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
