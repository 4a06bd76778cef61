"""MONAI SegResNetDS / SegResEncoder weights (CT-FM) -> the project's pretrained format.

  python -m weights_port.convert --src model.safetensors --dst weights/ct_fm_encoder
  python -m weights_port.convert --src ct_fm_segresnet.safetensors --dst DIR --arch encoder
  python -m weights_port.convert --src lighter.ckpt --dst DIR --out_channels 5

Reads .safetensors with safetensors' numpy API (torch not needed) and .pt/.pth/.ckpt with
torch (Lightning/lighter checkpoints: a "state_dict" entry, keys prefixed `model.`,
`trunk.`, `backbone.` or `module.`). Detects the architecture from key names and shapes,
ports through weights_port.mapping's key table, and writes DIR/model.json + DIR/variables
for `assft_jax.models.load_pretrained(DIR)`.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from absl import flags

from assft_jax.errors import cli_errors
from weights_port.mapping import PortError, to_flax

_PREFIXES = ("model.", "trunk.", "backbone.", "module.", "net.")


def read_state_dict(src: str | Path, trust_pickle: bool = False) -> dict[str, np.ndarray]:
  """Tensors of `src` as numpy arrays, keyed as in the file (PortError if unreadable)."""
  src = Path(src)
  if not src.is_file():
    raise PortError(f"--src {src}: no such file")
  suffix = src.suffix.lower()
  if suffix == ".safetensors":
    import safetensors.numpy

    try:
      return dict(safetensors.numpy.load_file(str(src)))
    except Exception as e:  # SafetensorError, truncated or corrupt file
      raise PortError(f"--src {src}: not a readable safetensors file ({e})") from None
  if suffix in (".pt", ".pth", ".ckpt", ".bin"):
    return _read_torch(src, trust_pickle)
  raise PortError(
    f"--src {src}: unknown file type {suffix!r} (expected .safetensors, .pt, .pth or .ckpt)"
  )


def _read_torch(src: Path, trust_pickle: bool) -> dict[str, np.ndarray]:
  try:
    import torch
  except ImportError:
    raise PortError(
      f"--src {src}: reading a torch-pickled file needs torch "
      "(pip install torch==2.13.0), or convert it to .safetensors"
    ) from None
  try:
    obj = torch.load(str(src), map_location="cpu", weights_only=not trust_pickle)
  except Exception as e:
    hint = (
      ""
      if trust_pickle
      else (" ; if you trust the file, --trust_pickle allows arbitrary pickled objects")
    )
    raise PortError(
      f"--src {src}: cannot load with torch ({str(e).splitlines()[0]}){hint}"
    ) from None
  if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
    obj = obj["state_dict"]
  if not isinstance(obj, Mapping):
    raise PortError(f"--src {src}: holds a {type(obj).__name__}, not a state_dict")
  return {
    k: v.detach().cpu().float().numpy() if v.is_floating_point() else v.numpy()
    for k, v in obj.items()
    if isinstance(v, torch.Tensor)
  }


def strip_prefixes(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Drops wrapper prefixes (model., trunk., backbone., module., net.) from every key."""
  out = {}
  for k, v in sd.items():
    while k.startswith(_PREFIXES):
      k = k.split(".", 1)[1]
    out[k] = v
  return out


def _count(keys, pattern: str) -> dict[int, int]:
  """For keys matching `pattern` (groups i, j), i -> number of distinct j."""
  seen: dict[int, set] = {}
  for k in keys:
    m = re.match(pattern, k)
    if m:
      seen.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
  return {i: len(js) for i, js in sorted(seen.items())}


def detect_config(sd: Mapping[str, np.ndarray], norm: str | None = None) -> dict:
  """model_config dict from key names and shapes (PortError if not a 3D SegResNet)."""
  is_full = any(k.startswith(("encoder.", "up_layers.")) for k in sd)
  p = "encoder." if is_full else ""
  w = sd.get(f"{p}conv_init.weight")
  if w is None:
    raise PortError(
      f"no '{p}conv_init.weight' key: not a MONAI SegResNetDS/SegResEncoder "
      f"state_dict (first keys: {', '.join(list(sd)[:5])})"
    )
  if w.ndim != 5:
    raise PortError(
      f"'{p}conv_init.weight' has shape {tuple(w.shape)}: a {w.ndim - 2}D "
      "model; only 3D SegResNet (5-d conv kernels) is supported"
    )
  blocks = _count(sd, rf"{re.escape(p)}layers\.(\d+)\.blocks\.(\d+)\.")
  if not blocks or list(blocks) != list(range(len(blocks))):
    raise PortError(f"encoder levels {list(blocks)} are not 0..L-1")
  has_bn = any(k.endswith("running_mean") for k in sd)
  if norm is None and not has_bn:
    raise PortError("no BatchNorm running stats in the file: pass --norm instance|group")
  cfg = {
    "arch": "segresnet" if is_full else "encoder",
    "init_filters": int(w.shape[0]),
    "in_channels": int(w.shape[1]),
    "blocks_down": list(blocks.values()),
    "norm": norm or "batch",
    "conv_impl": "auto",
    "dtype": "float32",
    "remat": False,
  }
  if is_full:
    up = _count(sd, r"up_layers\.(\d+)\.blocks\.(\d+)\.")
    heads = sorted(
      int(m.group(1)) for k in sd if (m := re.match(r"up_layers\.(\d+)\.head\.weight$", k))
    )
    if not heads:
      raise PortError("full SegResNetDS without any 'up_layers.N.head.weight'")
    n_up = len(blocks) - 1
    cfg.update(
      out_channels=int(sd[f"up_layers.{heads[-1]}.head.weight"].shape[0]),
      dsdepth=n_up - heads[0],
      blocks_up=[up.get(i, 0) for i in range(n_up)],
    )
    if cfg["blocks_up"] == [1] * n_up:
      cfg["blocks_up"] = None
  return cfg


def convert(
  src: str | Path,
  dst: str | Path,
  arch: str = "auto",
  out_channels: int | None = None,
  strict: bool = True,
  norm: str | None = None,
  trust_pickle: bool = False,
) -> dict:
  """Ports `src` into the pretrained directory `dst`; returns the written model config.

  arch: "auto" (from the keys), "encoder" (keep only the encoder of a full model), or
  "segresnet" (a full model; an encoder-only file then gets a fresh He-initialised
  decoder with `out_channels` classes). `out_channels` on a full model with another class
  count re-initialises the heads (see load_pretrained).
  """
  if arch not in ("auto", "encoder", "segresnet"):
    raise PortError(f"--arch {arch!r}: expected auto, encoder or segresnet")
  sd = strip_prefixes(read_state_dict(src, trust_pickle))
  cfg = detect_config(sd, norm)
  import jax  # after the cheap checks: a bad file fails fast

  from assft_jax.models import (
    abstract_variables,
    build_model,
    init_variables,
    load_pretrained,
    model_config,
    save_pretrained,
  )

  if arch == "encoder" and cfg["arch"] == "segresnet":
    sd = {k[len("encoder.") :]: v for k, v in sd.items() if k.startswith("encoder.")}
    cfg = {k: v for k, v in cfg.items() if k not in ("out_channels", "dsdepth", "blocks_up")}
    cfg["arch"] = "encoder"
  if arch == "segresnet" and cfg["arch"] == "encoder" and out_channels is None:
    raise PortError(
      "--arch segresnet on an encoder-only file needs --out_channels N "
      "(the decoder is freshly initialised)"
    )
  module = build_model(cfg)
  variables = to_flax(sd, cfg, shapes=abstract_variables(module), strict=strict)
  if not strict:  # fill what the file did not have from a fresh init
    fresh = init_variables(module, jax.random.key(0))
    variables = _merge(fresh, variables)
  save_pretrained(dst, model_config(module), variables)
  if (
    out_channels is not None
    and arch != "encoder"
    and (cfg["arch"] == "encoder" or out_channels != cfg["out_channels"])
  ):
    module, variables = load_pretrained(dst, out_channels=out_channels)
    save_pretrained(dst, model_config(module), variables)
  return model_config(module)


def _merge(base: Mapping, over: Mapping) -> dict:
  out = dict(base)
  for k, v in over.items():
    out[k] = _merge(base[k], v) if isinstance(v, Mapping) and k in base else v
  return out


def _flags() -> flags.FlagValues:
  fv = flags.FlagValues()
  flags.DEFINE_string(
    "src", None, "MONAI state_dict: .safetensors, .pt, .pth or .ckpt", flag_values=fv
  )
  flags.DEFINE_string("dst", None, "output pretrained directory", flag_values=fv)
  flags.DEFINE_enum(
    "arch", "auto", ["auto", "encoder", "segresnet"], "architecture to write", flag_values=fv
  )
  flags.DEFINE_integer(
    "out_channels", None, "classes of the written SegResNetDS", lower_bound=1, flag_values=fv
  )
  flags.DEFINE_bool("strict", True, "missing/unexpected keys are errors", flag_values=fv)
  flags.DEFINE_enum(
    "norm",
    None,
    ["batch", "instance", "group"],
    "norm of a file without BatchNorm stats",
    flag_values=fv,
  )
  flags.DEFINE_bool(
    "trust_pickle", False, "allow arbitrary pickled objects in torch files", flag_values=fv
  )
  return fv


def parse(argv: list[str], fv: flags.FlagValues, required: tuple[str, ...]) -> None:
  """Parses argv into fv; one-line error + exit 2 on bad flags (no traceback)."""
  argv = [a.replace("--no-", "--no") if a.startswith("--no-") else a for a in argv]
  try:
    rest = fv(argv)
  except flags.Error as e:
    _die(f"{argv[0]}: {e}", 2)
  if len(rest) > 1:
    _die(f"{argv[0]}: unexpected arguments {rest[1:]}", 2)
  for name in required:
    if fv[name].value is None:
      _die(f"{argv[0]}: flag --{name} is required", 2)


def _die(msg: str, code: int = 1):
  print(f"error: {msg}", file=sys.stderr)
  sys.exit(code)


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv if argv is None else argv)
  fv = _flags()
  parse(argv, fv, ("src", "dst"))
  with cli_errors():
    cfg = convert(fv.src, fv.dst, fv.arch, fv.out_channels, fv.strict, fv.norm, fv.trust_pickle)
  print(f"wrote {fv.dst}: {cfg}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
