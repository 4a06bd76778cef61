"""kill -9 at random moments over a smoke run's whole life, each followed by the same
command until it ends. Slow: each kill reruns a smoke run (PERFORMANCE.md gives the time).

  ASSFT_KILLS=20 python -m pytest -m slow -s tests/test_faults_kill.py

Every resumed run must end with the uninterrupted run's queried and pseudo-labelled ids
and Dice within 1e-4, and leave no temp file in its workdir; the test prints
"kills survived: N / N". ASSFT_KILLS (default 20) sets N, ASSFT_KILL_SEED (default 0) the
draw, ASSFT_KILL_FROM (default 0) skips the first kills of the plan (a campaign in parts). The moments come two ways:
  - write points, by tests/_kill_child.py: the process SIGKILLs itself at the n-th write of
    a named file (the orbax round networks, the summary, the preprocessing cache, the
    source encoder, the annotators' manifest), so each of those is hit at least once;
  - wall time: uniform over the measured length of an uninterrupted run of that kind,
    and uniform over the source pretraining (from its log line).
Kinds: `cold` (a fresh cache but for the XLA one: phantoms, preprocessing, source
pretraining, round 0 and on), `warm` (the reference's cache: round 0 comes from it) and
`manifest` (--oracle=manifest: the run stops for labels, which are copied in from the
ground truth, and is run again).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from assft_jax import atomic, oracle
from tests._run_helpers import ROOT, run_cmd
from tests._smoke import same_results

PRETRAIN_LINE = "pre-training the phantom source encoder"
PRETRAIN_DONE = "source encoder: loss"


def launch(cmd: list[str], *, at: float | None = None, after=None):
  """Runs cmd; kills its process group `at` seconds after start, or `after` = (a log
  line, seconds) after that line appears. Returns (returncode, [(seconds, stderr line)])."""
  t0 = time.monotonic()
  proc = subprocess.Popen(
    cmd,
    cwd=ROOT,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
    start_new_session=True,
  )
  lines: list[tuple[float, str]] = []
  deadline = [None if at is None else t0 + at]

  def read():
    for line in proc.stderr:
      now = time.monotonic()
      lines.append((now - t0, line))
      if after is not None and deadline[0] is None and after[0] in line:
        deadline[0] = now + after[1]

  reader = threading.Thread(target=read, daemon=True)
  reader.start()
  while proc.poll() is None:
    if deadline[0] is not None and time.monotonic() >= deadline[0]:
      os.killpg(proc.pid, signal.SIGKILL)
      break
    time.sleep(0.02)
  proc.wait(timeout=1800)
  reader.join(timeout=30)
  return proc.returncode, lines


class Bench:
  """The reference run, the caches each kind starts from, and the measured lengths."""

  def __init__(self, root: Path):
    self.root = root
    self.cache0 = root / "cache0"
    rc, _ = launch(run_cmd(root / "ref", self.cache0))
    assert rc == 0
    self.ref = _summary(root / "ref")
    self._lengths: dict[str, tuple[float, list]] = {}

  def cache(self, kind: str, dest: Path) -> Path:
    if kind == "cold":  # compiled programs kept: only the run's own work is cold
      shutil.copytree(self.cache0 / "xla", dest / "xla")
    else:
      shutil.copytree(self.cache0, dest)
    return dest

  def length(self, kind: str) -> tuple[float, list]:
    """(seconds, stderr lines) of an uninterrupted run of `kind`, measured once; it must
    give the reference's result too."""
    if kind not in self._lengths:
      d = self.root / f"length_{kind}"
      t0 = time.monotonic()
      lines = run_to_end(d / "wd", self.cache(kind, d / "cache"), kind)
      self._lengths[kind] = (time.monotonic() - t0, lines)
      same_results(self.ref, _summary(d / "wd"))
    return self._lengths[kind]


def _summary(wd: Path) -> dict:
  import json

  return json.loads((wd / "summary.json").read_text())


def manifest_argv(wd: Path) -> list[str]:
  return ["--oracle=manifest", f"--labels_dir={wd.parent / 'labels'}"]


def label_pending(wd: Path, cache: Path) -> None:
  """The annotators' part: every case of the newest manifest gets its ground truth."""
  (gt,) = list(cache.glob("phantom_mr_*"))
  labels = wd.parent / "labels"
  labels.mkdir(exist_ok=True)
  manifest = sorted(wd.glob("round_*/to_annotate.csv"))[-1]
  for row in oracle.read_manifest(manifest):
    shutil.copy(gt / "labelsTr" / f"{row['case_id']}.nii.gz", row["label"])


def run_to_end(wd: Path, cache: Path, kind: str, kill=None, kill_process: int = 0) -> list:
  """Runs (and reruns, labelling what a manifest run waits for) until the run is done.
  kill: how the `kill_process`-th process dies, by SIGKILL: run_cmd()'s `kill_at` (a write
  point) or launch()'s keyword arguments (a moment). Returns the stderr lines of all
  processes."""
  argv = manifest_argv(wd) if kind == "manifest" else []
  lines: list = []
  for i in range(20):
    how = dict(kill) if kill and i == kill_process else {}
    rc, out = launch(run_cmd(wd, cache, *argv, kill_at=how.pop("kill_at", None)), **how)
    lines += out
    if kill and i == kill_process:
      text = "".join(x for _, x in out)[-3000:]
      assert rc == -signal.SIGKILL, f"not killed ({kill}); rc {rc}: {text}"
      continue
    if rc == 3 and kind == "manifest":
      label_pending(wd, cache)
      continue
    assert rc == 0, "".join(x for _, x in out)[-3000:]
    return lines
  raise AssertionError("the run did not end after 20 processes")


def plan(n: int, rng: random.Random) -> list[tuple[str, str, dict, int]]:
  """(description, kind, launch() kill arguments, which process of the run) per kill: the
  named write points first (each hit at least once for n >= 7), then wall-time moments."""
  r = rng.randint
  fixed = [
    ("preprocessing cache write", "cold", {"kill_at": f"commit:preprocessed/:{r(1, 30)}"}, 0),
    ("summary write", "warm", {"kill_at": f"commit:summary.json:{r(1, 3)}"}, 0),
    ("manifest write (wait)", "manifest", {"kill_at": "commit:to_annotate.csv:1"}, r(0, 2)),
    ("source pretraining", "cold", {"after": (PRETRAIN_LINE, rng.uniform(0.0, 0.9))}, 0),
    ("orbax write (written)", "warm", {"kill_at": f"commit:round_00{r(1, 2)}/model:1"}, 0),
    ("orbax write (begun)", "cold", {"kill_at": "open:round_000/model:1"}, 0),
    ("source encoder write", "cold", {"kill_at": "commit:source_encoder_:1"}, 0),
  ]
  timed = [
    (f"wall time {i}", rng.choice(["cold", "warm"]), {"at": rng.uniform(0.02, 0.85)}, 0)
    for i in range(max(0, n - len(fixed)))
  ]
  return (fixed + timed)[:n]


@pytest.mark.slow
def test_random_kills_are_survived(tmp_path, capsys):
  n = int(os.environ.get("ASSFT_KILLS", "20"))
  first = int(os.environ.get("ASSFT_KILL_FROM", "0"))
  rng = random.Random(int(os.environ.get("ASSFT_KILL_SEED", "0")))
  kills = plan(n, rng)
  bench = Bench(tmp_path)
  survived = 0
  for i, (what, kind, kill, process) in list(enumerate(kills))[first:]:
    d = tmp_path / f"kill_{i:02d}"
    # Wall-time moments are drawn as shares: of the run's measured length, or of the
    # source pretraining's.
    if "at" in kill:
      kill = {"at": kill["at"] * bench.length(kind)[0]}
    if "after" in kill:
      kill = {"after": (PRETRAIN_LINE, kill["after"][1] * _pretrain_seconds(bench))}
    run_to_end(d / "wd", bench.cache(kind, d / "cache"), kind, kill, process)
    same_results(bench.ref, _summary(d / "wd"))
    stale = [p for p in [d / "wd", *(d / "wd").glob("round_*")] if atomic.clean_stale(p)]
    assert not stale, f"temp files left in {stale}"
    survived += 1
    with capsys.disabled():
      print(f"kill {i + 1}/{n} ({kind}, {what}, {kill}): survived")
  with capsys.disabled():
    print(f"kills survived: {survived} / {n - first}")
  assert survived == n - first


def _pretrain_seconds(bench: Bench) -> float:
  """How long the source pretraining took in the uninterrupted cold run (from its log)."""
  _, lines = bench.length("cold")
  start = next(t for t, x in lines if PRETRAIN_LINE in x)
  end = next(t for t, x in lines if PRETRAIN_DONE in x)
  return end - start
