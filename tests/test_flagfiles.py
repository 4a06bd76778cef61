"""Every flagfile parses into a valid RunConfig, and the paper protocols carry §4's numbers."""

from __future__ import annotations

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
