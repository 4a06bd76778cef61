"""Every entry point answers a user's mistake with one clear message and no traceback.

Each CLI gets a bad flag or a bad file it refuses on purpose; the message must name it.
The processes run side by side (each pays only its interpreter and imports).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests._run_helpers import ROOT, SMOKE


def _cases(tmp: Path) -> dict[str, tuple[list[str], int, str]]:
  """name -> (argv after `python -m`, exit code, a text the message must contain)."""
  missing = tmp / "nowhere"
  return {
    "run: unknown strategy": (
      ["experiments.run", f"--flagfile={SMOKE}", f"--workdir={tmp / 'wd'}", "--strategy=nonsense"],
      1,
      "error: --strategy='nonsense' is unknown",
    ),
    "run: bad budget": (
      ["experiments.run", f"--flagfile={SMOKE}", f"--workdir={tmp / 'wd2'}", "--budget=abc"],
      1,
      "--budget='abc'",
    ),
    "sweep: a flag the sweep sets per cell": (
      [
        "experiments.sweep",
        f"--flagfile={SMOKE}",
        "--strategies=assft",
        f"--out={tmp / 'sweep'}",
        "--ssft",
      ],
      1,
      "--ssft",
    ),
    "report: no runs": (["experiments.report", str(missing)], 1, str(missing)),
    "pretrain: no --out": (["experiments.pretrain", f"--flagfile={SMOKE}"], 1, "--out"),
    "convert: missing file": (
      ["weights_port.convert", f"--src={missing}.safetensors", f"--dst={tmp / 'out'}"],
      1,
      f"{missing}.safetensors",
    ),
    "export: missing checkpoint": (
      ["weights_port.export", f"--src={missing}", f"--dst={tmp / 'x.safetensors'}"],
      1,
      str(missing),
    ),
    "data check: missing dataset": (["assft_jax.data.check", str(missing)], 1, str(missing)),
    "predict: no --model": (
      ["experiments.predict", f"--input={tmp}", f"--output={tmp / 'pred'}"],
      1,
      "--model",
    ),
    "predict: empty input folder": (
      ["experiments.predict", f"--model={missing}", f"--input={tmp}", f"--output={tmp / 'p2'}"],
      1,
      "no *.nii.gz or *.nii files",
    ),
    "status: not a workdir": (["experiments.status", str(missing)], 1, str(missing)),
    "run: unknown --keep_labels class": (
      [
        "experiments.run",
        f"--flagfile={SMOKE}",
        f"--workdir={tmp / 'wd3'}",
        "--keep_labels=liver,heart",
      ],
      1,
      "heart",
    ),
    "phantom: bad shape": (
      ["assft_jax.data.phantom", f"--out={tmp / 'ph'}", "--domain=ct", "--shape=a,b"],
      2,
      "--shape",
    ),
  }


def test_every_cli_refuses_bad_input_without_a_traceback(tmp_path):
  cases = _cases(tmp_path)
  procs = {
    name: subprocess.Popen(
      [sys.executable, "-m", *argv],
      cwd=ROOT,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for name, (argv, _, _) in cases.items()
  }
  failures = []
  for name, proc in procs.items():
    _, err = proc.communicate(timeout=600)
    _, code, needle = cases[name]
    if proc.returncode != code or "Traceback" in err or needle not in err:
      failures.append(f"{name}: exit {proc.returncode} (want {code}), stderr:\n{err[-1500:]}")
  assert not failures, "\n\n".join(failures)
