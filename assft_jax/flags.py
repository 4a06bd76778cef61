"""absl flags for a run, defined from the declarations in `assft_jax.config`, and the one
function that turns them back into a RunConfig.

Every declared field is a flag of the same name (see declare.py for how a field's type
picks the flag's kind). Four flags are not fields: --overwrite and --resume_from (run
controls, not part of the config) and --lower_bound / --upper_bound (which set al.mode).

experiments/run.py, experiments/pretrain.py, experiments/sweep.py (through run) and the
tests share these, so a flagfile means the same thing to all of them.
"""

from __future__ import annotations

import sys
from typing import Any

from absl import flags

from assft_jax import config as config_lib
from assft_jax.declare import Option

_DEFINE = {
  str: flags.DEFINE_string,
  int: flags.DEFINE_integer,
  float: flags.DEFINE_float,
  bool: flags.DEFINE_bool,
}


def _define(fv: flags.FlagValues, opt: Option) -> None:
  if opt.is_list:
    default = None if opt.default is None else [str(x) for x in opt.default]
    flags.DEFINE_list(opt.name, default, opt.help, flag_values=fv)
  elif opt.choices:
    flags.DEFINE_enum(opt.name, opt.default, list(opt.choices), opt.help, flag_values=fv)
  else:
    _DEFINE[opt.kind](opt.name, opt.default, opt.help, flag_values=fv)


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> flags.FlagValues:
  """Defines the run flags on `fv` once (absl refuses a second definition)."""
  if "workdir" in fv:
    return fv
  names = []
  for opt in config_lib.options():
    if opt.flag:
      _define(fv, opt)
      names.append(opt.name)
  flags.DEFINE_bool(
    "overwrite", False, "Delete the workdir's run and start afresh.", flag_values=fv
  )
  flags.DEFINE_integer(
    "resume_from",
    None,
    "Continue after this complete round (e.g. after a damaged round or a NaN stop); the "
    "later rounds are moved to WORKDIR/discarded/. --lr, --clip_norm, --weight_decay and "
    "--precision may change with it. An action: give it once, not on every rerun.",
    lower_bound=0,
    flag_values=fv,
  )
  flags.DEFINE_bool(
    "allow_kernel_switch",
    False,
    "Resume a run whose rounds were made with another conv kernel (--conv_impl, as "
    "config.json records it) with the kernel this process resolves; each round's row "
    "records its kernel.",
    flag_values=fv,
  )
  flags.DEFINE_bool(
    "lower_bound", False, "Evaluate without any target fine-tuning.", flag_values=fv
  )
  flags.DEFINE_bool("upper_bound", False, "Fine-tune on all target pool cases.", flag_values=fv)
  # absl's --help lists the main program's own (key) flags only, and these are defined
  # here, in a library module; declaring them key flags of the program lists them.
  for name in [*names, "overwrite", "resume_from", "allow_kernel_switch", *config_lib.BOUNDS]:
    fv.register_key_flag_for_module(sys.argv[0], fv[name])
  return fv


def parse(argv: list[str], *, machine: bool = True) -> config_lib.RunConfig:
  """RunConfig from command-line words (e.g. ['--flagfile=...', '--workdir=...'])."""
  fv = define_flags(flags.FlagValues())
  fv(["assft"] + list(argv))
  return config_from_flags(fv, machine=machine)


def _value(opt: Option, raw: Any) -> Any:
  """A parsed flag value as the field's type; a list of numbers is checked here."""
  if not opt.is_list or raw is None:
    return raw
  try:
    return tuple(opt.kind(x) for x in raw)
  except ValueError:
    what = "integers" if opt.kind is int else "numbers"
    raise config_lib.ConfigError(f"--{opt.name}={','.join(raw)}: expected {what}") from None


def config_from_flags(
  fv: flags.FlagValues = flags.FLAGS,
  *,
  default_workdir: str | None = None,
  machine: bool = True,
) -> config_lib.RunConfig:
  """The validated RunConfig of parsed flags, with what they leave open made concrete
  (`components.resolve`: --ssft from the strategy, --conv_impl=auto for this machine).

  `default_workdir` stands in for an unset --workdir (experiments.pretrain needs none);
  without either, --workdir is required. machine=False leaves --conv_impl as given and
  imports no jax (the sweep checks its cells' plans in a process that runs none).
  """
  tree: dict[str, Any] = {}  # nested as RunConfig.to_json()
  for opt in config_lib.options():
    if opt.flag:
      node = tree.setdefault(opt.section, {}) if opt.section else tree
      node[opt.name] = _value(opt, fv[opt.name].value)
  tree["workdir"] = tree["workdir"] or default_workdir
  if not tree["workdir"]:
    raise config_lib.ConfigError("--workdir is required")
  if fv.lower_bound and fv.upper_bound:
    raise config_lib.ConfigError("--lower_bound and --upper_bound exclude each other")
  mode = "lower_bound" if fv.lower_bound else "upper_bound" if fv.upper_bound else "al"
  tree["al"]["mode"] = mode
  cfg = config_lib.RunConfig.from_json(tree)
  config_lib.validate(cfg)
  if not machine:
    return config_lib.resolve_ssft(cfg)
  from assft_jax import components  # it imports jax: not before the flags are parsed

  return components.resolve(cfg)
