"""The config declarations: every field a flag with help, the choices checked from the
same declaration, the patch checked against the network, and the pretrain CLI on the
run's flags."""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from absl import flags

from assft_jax import config as config_lib
from assft_jax import flags as run_flags
from tests._run_helpers import ROOT, SMOKE

# The run flags by absl kind, as the flagfiles, the README and the sweeps use them.
FLAG_KINDS = {
  "string": "workdir cache_dir data_dir layout include orientation pretrained strategy "
  "budget labels_dir annotation_dir",
  "int": "seed phantom_n phantom_seed init_filters dsdepth source_steps epochs_init "
  "epochs_round steps_per_epoch max_stage_steps batch_size devices sw_batch_size rounds "
  "resume_from",
  "float": "test_fraction phantom_hard_fraction source_lr lr weight_decay clip_norm tau_c "
  "nsd_tolerance_mm",
  "bool": "overwrite augment ssft allow_kernel_switch lower_bound upper_bound",
  "comma separated list of strings": "splits drop_labels keep_labels label_map stratify_by "
  "crop_size spacing "
  "phantom_shape phantom_shares blocks_down patch",
  "string enum": "pipeline phantom_domain norm conv_impl precision init_pick oracle stage3",
}
CHOICES = {
  "pipeline": ("paper", "ctfm"),
  "phantom_domain": ("ct", "mr"),
  "norm": ("batch", "instance", "group"),
  "conv_impl": ("auto", "native", "s2d", "onednn"),
  "precision": ("fp32", "bf16"),
  "init_pick": ("medoid", "random", "first"),
  "oracle": ("ground_truth", "manifest"),
  "stage3": ("auto", "supervised"),
}
SECTIONS = {
  "data": config_lib.DataConfig,
  "model": config_lib.ModelConfig,
  "train": config_lib.TrainConfig,
  "al": config_lib.ALConfig,
  "eval": config_lib.EvalConfig,
}


def parse(*argv: str) -> config_lib.RunConfig:
  return run_flags.parse(["--workdir=x", *argv])


def test_every_field_has_help_and_its_flag_carries_it():
  fv = run_flags.define_flags(flags.FlagValues())
  fields = list(dataclasses.fields(config_lib.RunConfig)[:3])
  fields += [f for cls in SECTIONS.values() for f in dataclasses.fields(cls)]
  for f in fields:
    assert f.metadata["help"].strip(), f.name
    if f.name != "mode":  # set by --lower_bound / --upper_bound
      assert fv[f.name].help.endswith(f.metadata["help"])  # enums prefix <a|b>:
  for name in fv:
    assert fv[name].help.strip(), name


def test_flag_names_and_kinds_are_unchanged():
  fv = run_flags.define_flags(flags.FlagValues())
  got = {name: fv[name].flag_type() for name in fv}
  want = {name: kind for kind, names in FLAG_KINDS.items() for name in names.split()}
  assert got == want
  for name, choices in CHOICES.items():
    assert tuple(fv[name].parser.enum_values) == choices


def test_run_help_lists_every_flag():
  out = subprocess.run(
    [sys.executable, "-m", "experiments.run", "--help"],
    cwd=ROOT,
    capture_output=True,
    text=True,
  ).stdout  # absl's --help exits with 1
  fv = run_flags.define_flags(flags.FlagValues())
  for name in fv:
    flag = "--[no]" + name if fv[name].boolean else f"--{name}"
    assert f"  {flag}: " in out, name
    assert fv[name].help.split()[0] in out.split(f"  {flag}: ")[1].split("\n")[0], name


@pytest.mark.parametrize("name", sorted(CHOICES) + ["mode"])
def test_validate_checks_every_declared_choice(name):
  cfg = parse()
  section = next(s for s, cls in SECTIONS.items() if name in cls.__dataclass_fields__)
  bad = dataclasses.replace(getattr(cfg, section), **{name: "nonsense"})
  with pytest.raises(config_lib.ConfigError, match=f"--{name}='nonsense': expected one of"):
    config_lib.validate(dataclasses.replace(cfg, **{section: bad}))


def test_enum_flag_refuses_a_value_outside_its_choices():
  with pytest.raises(flags.IllegalFlagValueError, match="norm"):
    parse("--norm=layer")


@pytest.mark.parametrize(
  "argv, needle",
  [
    (["--patch=a,16,16"], "--patch=a,16,16: expected integers"),
    (["--spacing=1.5,x,2"], "--spacing=1.5,x,2: expected numbers"),
    (["--lower_bound", "--upper_bound"], "--lower_bound and --upper_bound exclude each other"),
    (["--rounds=0"], "--rounds=0: must be at least 1"),
    (["--test_fraction=1"], "--test_fraction=1.0: must be in (0, 1)"),
    (["--oracle=manifest"], "--oracle=manifest needs --labels_dir"),
    (["--stage3=supervised"], "--stage3=supervised is the control without pseudo-labels"),
    (["--stage3=supervised", "--ssft"], "it needs --nossft"),
    (["--nsd_tolerance_mm=-1"], "--nsd_tolerance_mm=-1.0: must be a finite distance >= 0"),
    (["--nsd_tolerance_mm=inf"], "--nsd_tolerance_mm=inf: must be a finite distance >= 0"),
  ],
)
def test_bad_flags_name_themselves(argv, needle):
  with pytest.raises(config_lib.ConfigError) as e:
    parse(*argv)
  assert needle in str(e.value)


def test_stage3_defaults_to_auto_and_the_control_runs_without_ssft():
  assert parse().al.stage3 == "auto" and parse("--nossft").al.stage3 == "auto"
  cfg = parse("--nossft", "--stage3=supervised")
  assert (cfg.al.ssft, cfg.al.stage3) == (False, "supervised")


def test_ssft_follows_the_strategy_unless_given():
  assert parse("--strategy=assft").al.ssft is True
  assert parse("--strategy=random").al.ssft is False
  assert parse("--strategy=dkd_asd").al.ssft is False
  assert parse("--strategy=random", "--ssft").al.ssft is True
  assert parse("--strategy=assft", "--nossft").al.ssft is False


@pytest.mark.parametrize(
  "token, run_argv",
  [
    ("random", ["--strategy=random"]),
    ("assft", ["--strategy=assft"]),
    ("entropy", ["--strategy=entropy"]),
    ("random+ssft", ["--strategy=random", "--ssft"]),
    ("dkd_asd+sup", ["--strategy=dkd_asd", "--stage3=supervised"]),
  ],
)
def test_a_strategy_name_is_the_same_arm_in_run_and_sweep(token, run_argv):
  """The sweep's cell for `token` and `experiments.run` with the strategy's own flags (no
  --ssft given) build the same config."""
  from assft_jax import sweep

  (cell,) = sweep.plan_cells([token], [3], "/tmp/out")
  cmd = sweep.run_command(cell, [str(SMOKE)])
  swept = run_flags.parse(cmd[cmd.index("experiments.run") + 1 :])
  ran = run_flags.parse([f"--flagfile={SMOKE}", *run_argv, "--seed=3", f"--workdir={cell.workdir}"])
  assert swept == ran


def test_conv_impl_is_resolved_when_the_config_is_built():
  from assft_jax import components
  from assft_jax.models import onednn

  cpu = "onednn" if onednn.available() else "s2d"
  assert parse().model.conv_impl == cpu  # one CPU device, float32
  assert parse("--precision=bf16").model.conv_impl == "s2d"  # oneDNN runs float32 only
  assert parse("--conv_impl=native").model.conv_impl == "native"
  cfg = parse()
  assert components.resolve(cfg) == cfg  # concrete values stay


def test_workdir_is_required_unless_a_default_stands_in():
  fv = run_flags.define_flags(flags.FlagValues())
  fv(["prog", "--seed=3"])
  with pytest.raises(config_lib.ConfigError, match="--workdir is required"):
    run_flags.config_from_flags(fv)
  cfg = run_flags.config_from_flags(fv, default_workdir="/tmp/out")
  assert cfg.workdir == "/tmp/out" and cfg.cache == Path("/tmp/out/cache") and cfg.seed == 3


@pytest.mark.parametrize("flag, mode", [("--lower_bound", "lower_bound"), ("", "al")])
def test_bounds_set_the_mode(flag, mode):
  cfg = parse(*([flag] if flag else []))
  assert cfg.al.mode == mode
  assert cfg.strategy_name == ("assft" if mode == "al" else mode)


def test_from_json_inverts_to_json():
  cfg = parse(f"--flagfile={SMOKE}", "--spacing=1.5,1.5,2", "--clip_norm=1", "--upper_bound")
  back = config_lib.RunConfig.from_json(json.loads(json.dumps(cfg.to_json())))
  assert back == cfg and back.data.spacing == (1.5, 1.5, 2.0)


def test_a_config_json_without_a_newer_field_resumes_as_its_default():
  """A field added since a run was made (e.g. --keep_labels) is not a difference when the
  new config keeps its default, and is one when it does not."""
  new = parse("--keep_labels=liver").to_json()
  old = parse().to_json()
  del old["data"]["keep_labels"], old["eval"]
  assert config_lib.config_diff(old, parse().to_json()) == []
  assert config_lib.config_diff(old, new) == ["keep_labels: [] -> ['liver']"]
  tol = parse("--nsd_tolerance_mm=1").to_json()
  assert config_lib.config_diff(old, tol) == ["nsd_tolerance_mm: 2.0 -> 1.0"]


def test_class_selection_flags_parse():
  cfg = parse("--keep_labels=liver,3", "--label_map=kidney_left:kidney,kidney_right:kidney")
  assert cfg.data.keep_labels == ("liver", "3")
  assert cfg.data.label_map == ("kidney_left:kidney", "kidney_right:kidney")
  assert parse().eval.nsd_tolerance_mm == 2.0


def test_option_needs_help():
  with pytest.raises(TypeError, match="help"):
    config_lib.option(1, help=" ")


@pytest.mark.parametrize("levels", [1, 3, 4, 5, 6])
def test_check_patch_matches_the_divisibility_rule(levels):
  divisor = 2 ** (levels - 1)
  sizes = (8, 12, 16, 24, 32, 48, 96, 160)
  shapes = list(itertools.product(sizes, repeat=3))[::7] + [(32, 32), (32, 32, 32, 32)]
  for shape in shapes:
    fits = len(shape) == 3 and not np.any(np.mod(shape, divisor))
    if fits:
      config_lib.check_patch(shape, levels, "ctfm")
      continue
    with pytest.raises(config_lib.ConfigError) as e:
      config_lib.check_patch(shape, levels, "runs/ctfm")
    msg = str(e.value)
    assert msg.startswith(f"--patch={','.join(map(str, shape))}: ")
    assert f"need 3 sizes divisible by {divisor}" in msg and "runs/ctfm" in msg


def test_validate_checks_the_patch_only_for_the_phantom_encoder():
  with pytest.raises(config_lib.ConfigError, match="--patch=20,20,20: need 3 sizes divisible by 8"):
    parse("--patch=20,20,20")
  # A --pretrained network's depth is known only once loaded: the session checks it then.
  cfg = parse("--patch=20,20,20", "--pretrained=runs/ctfm")
  assert cfg.train.patch == (20, 20, 20)
  with pytest.raises(config_lib.ConfigError, match="--phantom_shape=20,20,20: need 3 sizes"):
    parse("--phantom_shape=20,20,20", "--pretrained=runs/ctfm")


@pytest.mark.slow
def test_pretrain_cli_builds_the_encoder_a_run_caches(tmp_path):
  """experiments.pretrain on a flagfile == the encoder the run with it caches."""
  from assft_jax import models, pretrain

  out = tmp_path / "enc"
  subprocess.run(
    [sys.executable, "-m", "experiments.pretrain", f"--flagfile={SMOKE}", f"--out={out}"],
    cwd=ROOT,
    check=True,
    capture_output=True,
  )
  assert (tmp_path / "cache").is_dir()  # OUT/../cache without --workdir
  cfg = parse(f"--flagfile={SMOKE}", f"--cache_dir={tmp_path / 'run_cache'}")
  cached = pretrain.ensure_source_encoder(cfg)
  assert json.loads((out / "model.json").read_text()) == json.loads(
    (cached / "model.json").read_text()
  )
  _, a = models.load_pretrained(out)
  _, b = models.load_pretrained(cached)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
