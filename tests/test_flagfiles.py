"""Every flagfile parses into a valid RunConfig, and the paper protocols carry §4's numbers.

The resolved config is also checked field by field against one built here from the
declared defaults (DEFAULTS) and the flagfile's own lines: a workdir compares its
config.json on resume, so a refactoring of the flags must not change a single value, type
or key.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from assft_jax import flags as run_flags

FLAGS_DIR = Path(__file__).resolve().parents[1] / "experiments" / "flags"

# Paper §4.1 (sub-volume sizes), §4.2 (epochs, lr, batch) and §4.3 (rounds, budgets).
PAPER = {
  "amos_ct": dict(patch=(96, 160, 160), rounds=5, budget="5%", epochs_round=400),
  "flare21": dict(patch=(96, 192, 160), rounds=5, budget="5%", epochs_round=400),
  "abdomen_atlas": dict(patch=(96, 128, 160), rounds=1, budget="5%", epochs_round=800),
  "amos_mri": dict(patch=(48, 160, 224), rounds=6, budget="5%", epochs_round=400),
  "abdominal_mri": dict(patch=(64, 192, 192), rounds=3, budget="2", epochs_round=400),
}

# The declared defaults, as config.json holds them once `resolved` has made the two open
# ones concrete (--ssft from the strategy, --conv_impl=auto for this machine). A changed
# value here is a change of every workdir's config: old runs would refuse to resume (a
# new field is not: `config_diff` reads its absence as its default).
DEFAULTS = {
  "workdir": "x",
  "seed": 0,
  "cache_dir": None,
  "data": {
    "data_dir": None,
    "layout": "auto",
    "drop_labels": [],
    "keep_labels": [],
    "label_map": [],
    "include": None,
    "splits": ["training"],
    "pipeline": "paper",
    "crop_size": None,
    "spacing": None,
    "orientation": None,
    "test_fraction": 0.2,
    "stratify_by": [],
    "phantom_domain": "mr",
    "phantom_n": 40,
    "phantom_shape": [32, 32, 32],
    "phantom_seed": 0,
    "phantom_hard_fraction": 0.15,
    "phantom_shares": None,
  },
  "model": {
    "pretrained": None,
    "init_filters": 8,
    "blocks_down": [1, 2, 2, 4],
    "dsdepth": 1,
    "norm": "batch",
    "conv_impl": "auto",
    "source_steps": 150,
    "source_lr": 0.003,
  },
  "train": {
    "epochs_init": 100,
    "epochs_round": 400,
    "steps_per_epoch": 1,
    "max_stage_steps": 0,
    "patch": [32, 32, 32],
    "batch_size": 2,
    "lr": 0.0001,
    "weight_decay": 1e-05,
    "clip_norm": None,
    "precision": "fp32",
    "devices": 0,
    "augment": True,
    "sw_batch_size": 2,
  },
  "al": {
    "strategy": "assft",
    "ssft": None,
    "stage3": "auto",
    "rounds": 5,
    "budget": "5%",
    "init_pick": "medoid",
    "tau_c": 1.0,
    "oracle": "ground_truth",
    "labels_dir": None,
    "annotation_dir": None,
    "mode": "al",
  },
  "eval": {"nsd_tolerance_mm": 2.0},
}

# How a flagfile value reads, by flag name; every other flag is a plain string.
INTS = {
  "seed", "phantom_n", "phantom_seed", "init_filters", "dsdepth", "source_steps",
  "epochs_init", "epochs_round", "steps_per_epoch", "max_stage_steps", "batch_size", "devices",
  "sw_batch_size", "rounds",
}  # fmt: skip
FLOATS = {
  "phantom_hard_fraction",
  "test_fraction",
  "source_lr",
  "lr",
  "weight_decay",
  "clip_norm",
  "tau_c",
  "nsd_tolerance_mm",
}
BOOLS = {"augment", "ssft"}
INT_LISTS = {"crop_size", "phantom_shape", "blocks_down", "patch"}
FLOAT_LISTS = {"spacing", "phantom_shares"}
STR_LISTS = {"splits", "drop_labels", "keep_labels", "label_map", "stratify_by"}


def resolved(want: dict) -> dict:
  """An unset --ssft is on for the assft strategy only; --conv_impl=auto is oneDNN's convs
  on this one-CPU-device machine where the extension is built (float32 only), else the
  XLA rewrites."""
  from assft_jax.models import onednn

  if want["al"]["ssft"] is None:
    want["al"]["ssft"] = want["al"]["strategy"] == "assft"
  if want["model"]["conv_impl"] == "auto":
    fp32 = want["train"]["precision"] == "fp32"
    want["model"]["conv_impl"] = "onednn" if fp32 and onednn.available() else "s2d"
  return want


def _expand(lines: list[str]) -> list[str]:
  """`--flagfile=F` lines replaced by F's own lines (absl reads nested flagfiles in place;
  a relative F is taken from the repository's root, as the Makefile runs them)."""
  out = []
  for line in lines:
    name, eq, text = line.strip().partition("=")
    if name == "--flagfile" and eq:
      path = Path(text) if Path(text).is_absolute() else FLAGS_DIR.parents[1] / text
      out += _expand(path.read_text().splitlines())
    else:
      out.append(line)
  return out


def expected_config(lines: list[str]) -> dict:
  """DEFAULTS with `--name=value` / `--name` / `--noname` lines applied (nested flagfiles
  expanded), `resolved`."""
  lines = _expand(lines)
  want = copy.deepcopy(DEFAULTS)
  home = {k: want for k in want if not isinstance(want[k], dict)}
  home |= {k: sub for sub in want.values() if isinstance(sub, dict) for k in sub}
  assert len(home) == sum(len(v) if isinstance(v, dict) else 1 for v in want.values())
  for line in lines:
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    assert line.startswith("--"), line
    name, eq, text = line[2:].partition("=")
    if not eq:
      value = name in BOOLS
      name = name if value else name.removeprefix("no")
      assert name in BOOLS, line
    elif name in INTS:
      value = int(text)
    elif name in FLOATS:
      value = float(text)
    elif name in INT_LISTS | FLOAT_LISTS | STR_LISTS:
      kind = int if name in INT_LISTS else float if name in FLOAT_LISTS else str
      value = [kind(x) for x in text.split(",")]
    else:
      value = text
    home[name][name] = value
  return resolved(want)


@pytest.mark.parametrize("path", sorted(FLAGS_DIR.glob("*.flags")), ids=lambda p: p.stem)
def test_flagfile_resolves_to_the_same_config_json(path):
  cfg = run_flags.parse([f"--flagfile={path}", "--workdir=x"])
  want = expected_config(path.read_text().splitlines())
  # As strings: key order and int-vs-float (100 vs 100.0) matter to config.json too.
  assert json.dumps(cfg.to_json()) == json.dumps(want)


def test_expected_config_reads_every_kind_of_line():
  """The reference itself: each kind of value, and a --no boolean."""
  lines = ["--cache_dir=c", "--spacing=1.5,1.5,2", "--drop_labels=a,b", "--noaugment"]
  lines += ["--clip_norm=1", "--rounds=2", "# comment", ""]
  want = expected_config(lines)
  assert want["cache_dir"] == "c" and want["data"]["spacing"] == [1.5, 1.5, 2.0]
  assert want["data"]["drop_labels"] == ["a", "b"] and want["train"]["augment"] is False
  assert want["train"]["clip_norm"] == 1.0 and want["al"]["rounds"] == 2
  cfg = run_flags.parse(["--workdir=x"] + lines)
  assert json.dumps(cfg.to_json()) == json.dumps(want)


@pytest.mark.parametrize("path", sorted(FLAGS_DIR.glob("*.flags")), ids=lambda p: p.stem)
def test_flagfile_parses_and_documents_itself(path, tmp_path):
  cfg = run_flags.parse([f"--flagfile={path}", f"--workdir={tmp_path}"])
  head = path.read_text().splitlines()
  assert head[0].startswith("# ")
  comment = "\n".join(line for line in head if line.startswith("#"))
  assert "python -m experiments." in comment or "make demo" in comment
  assert "Runtime" in comment and "Expected" in comment
  assert cfg.workdir == str(tmp_path)


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_protocol_numbers(name, tmp_path):
  cfg = run_flags.parse([f"--flagfile={FLAGS_DIR / name}.flags", f"--workdir={tmp_path}"])
  want = PAPER[name]
  assert cfg.train.patch == want["patch"] and cfg.data.crop_size == want["patch"]
  assert cfg.al.rounds == want["rounds"] and cfg.al.budget == want["budget"]
  assert cfg.train.epochs_round == want["epochs_round"] and cfg.train.epochs_init == 100
  assert cfg.train.lr == 1e-4 and cfg.train.batch_size == 2
  assert cfg.data.pipeline == "paper" and cfg.al.strategy == "assft" and cfg.al.ssft
  if name == "amos_mri":
    assert set(cfg.data.drop_labels) == {"bladder", "prostate/uterus"}
