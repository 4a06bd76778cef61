"""The project on an accelerator, checked in one command: parity, speed and a sweep.

  python -m experiments.device_check --out=DIR [--quick] [--budget_s=420]

Writes DIR/device_check.json and DIR/device_check.txt (a short table):
  (i)   parity: the JAX SegResNetDS (conv_impl native) against MONAI's on the same device
        (torch's CUDA build on a GPU), eval logits, train-mode logits and the updated
        BatchNorm statistics, and the encoder's maps; max |difference| <= 1e-4, with
        matmuls and convolutions at full float32 precision on both sides (no TF32);
  (ii)  speed: the forward and the engine's train step against MONAI's (forward + DiceCE +
        backward + AdamW) at CT-FM's width (init_filters 32, blocks 1,2,2,4,4), batch 2
        at 96^3 and 128^3, in float32 (full precision on both sides, as in (i)) and bf16
        (JAX --precision=bf16; torch autocast),
        each side's median time and their ratio (JAX / MONAI, lower is better);
  (iii) one seed of `make benchmark`'s arms as a sweep whose runs train K at a time in
        one program (--runs_per_program), its wall time, the cells it completed within
        the budget, and the GPU's busy fraction (nvidia-smi's utilization, sampled).
--quick runs the same on the CPU at toy sizes (the default test suite runs it): the
tiny network only, 32^3, float32, and the smoke flagfile's arms. Needs torch and monai.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from absl import app, flags

flags.DEFINE_string("out", None, "Where device_check.json and device_check.txt go.")
flags.DEFINE_bool("quick", False, "Toy sizes, on whatever device there is (the CPU test).")
flags.DEFINE_integer("budget_s", 420, "Wall-time budget of the whole check (part iii stops).")
flags.mark_flags_as_required(["out"])
FLAGS = flags.FLAGS

TOL = 1e-4
ROOT = Path(__file__).resolve().parents[1]
BENCH_ARMS = (
  "lower_bound,upper_bound,random,fg_random,entropy,least_confidence,margin,coreset,badge,"
  "sann,ugtst,cup,dkd_asd,assft,dkd_asd+sup,random+ssft,random+sup"
)


def _torch_device():
  import torch

  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _exact_precision() -> None:
  """Full float32 matmuls and convolutions on both sides (no TF32)."""
  import jax
  import torch

  jax.config.update("jax_default_matmul_precision", "highest")
  torch.backends.cuda.matmul.allow_tf32 = False
  torch.backends.cudnn.allow_tf32 = False
  torch.set_float32_matmul_precision("highest")


def _monai(kind: str, seed: int, **kw):
  """A MONAI net with random weights, norm parameters and running statistics."""
  import torch
  from monai.networks.nets.segresnet_ds import SegResEncoder, SegResNetDS

  torch.manual_seed(seed)
  net = (SegResNetDS if kind == "segresnet" else SegResEncoder)(spatial_dims=3, **kw)
  g = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for name, p in net.named_parameters():
      if ".norm" in f".{name}" and name.endswith("weight"):
        p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
      elif ".norm" in f".{name}" and name.endswith("bias"):
        p.copy_(0.3 * torch.randn(p.shape, generator=g))
    for name, b in net.named_buffers():
      if name.endswith("running_mean"):
        b.copy_(0.5 * torch.randn(b.shape, generator=g))
      elif name.endswith("running_var"):
        b.copy_(0.5 + torch.rand(b.shape, generator=g))
  return net


def _np(t):

  return t.detach().float().cpu().numpy().copy()  # on a CPU .numpy() shares torch's memory


def parity(quick: bool) -> list[dict]:
  """(i): one row per case, max |JAX - MONAI| and whether it is within TOL."""
  configs = [("tiny", dict(init_filters=4, blocks_down=(1, 2, 2, 4, 4)))]
  if not quick:
    configs.append(("CT-FM width", dict(init_filters=32, blocks_down=(1, 2, 2, 4, 4))))
  return [row for name, arch in configs for row in _parity_case(name, arch)]


def _parity_case(name: str, arch: dict) -> list[dict]:
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch

  from assft_jax.models import SegResEncoder, SegResNetDS, model_config
  from weights_port.mapping import to_flax

  dev = _torch_device()
  cfg = dict(arch, in_channels=1, out_channels=3, dsdepth=1)
  net = _monai("segresnet", 0, **cfg).to(dev)
  module = SegResNetDS(**cfg, conv_impl="native")
  variables = to_flax({k: _np(v) for k, v in net.state_dict().items()}, model_config(module))
  x = np.random.default_rng(0).standard_normal((2, 1, 32, 32, 32)).astype(np.float32)
  xt = torch.from_numpy(x).to(dev)
  xj = jnp.asarray(np.moveaxis(x, 1, -1))
  rows = []
  with torch.no_grad():
    ref = _np(net.eval()(xt))
  got = jax.jit(module.apply)(variables, xj)
  rows.append(_row(f"{name} eval logits", np.moveaxis(np.asarray(got), -1, 1), ref))
  net.train()
  with torch.no_grad():
    ref = _np(net(xt))
  train = jax.jit(lambda v, a: module.apply(v, a, train=True, mutable=["batch_stats"]))
  out, mut = train(variables, xj)
  rows.append(_row(f"{name} train logits", np.moveaxis(np.asarray(out), -1, 1), ref))
  new = to_flax({k: _np(v) for k, v in net.state_dict().items()}, model_config(module))
  diff = max(
    float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
    for a, b in zip(jax.tree.leaves(mut["batch_stats"]), jax.tree.leaves(new["batch_stats"]))
  )
  rows.append({"case": f"{name} BatchNorm statistics", "max_abs": diff, "ok": diff <= TOL})
  enc_cfg = {k: cfg[k] for k in ("init_filters", "blocks_down", "in_channels")}
  enc = _monai("encoder", 2, **enc_cfg).to(dev).eval()
  jenc = SegResEncoder(**enc_cfg, conv_impl="native")
  ev = to_flax({k: _np(v) for k, v in enc.state_dict().items()}, model_config(jenc))
  with torch.no_grad():
    maps = enc(xt)
  gm = jax.jit(jenc.apply)(ev, xj)
  d = max(
    float(np.max(np.abs(np.moveaxis(np.asarray(g), -1, 1) - _np(m)))) for g, m in zip(gm, maps)
  )
  rows.append({"case": f"{name} encoder maps", "max_abs": d, "ok": d <= TOL})
  return rows


def _row(case: str, got, ref) -> dict:
  import numpy as np

  d = float(np.max(np.abs(np.asarray(got, np.float64) - np.asarray(ref, np.float64))))
  return {"case": case, "max_abs": d, "ok": d <= TOL}


def _median_time(fn, sync, repeats: int) -> float:
  fn()
  sync()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    sync()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def speed(quick: bool, budget_s: float) -> list[dict]:
  """(ii): JAX and MONAI medians and their ratio per (op, size, precision); a case that
  would start after `budget_s` is listed as skipped (its compiles alone take a while)."""
  sizes = (32,) if quick else (96, 128)
  precisions = ("fp32",) if quick else ("fp32", "bf16")
  arch = dict(init_filters=8 if quick else 32, blocks_down=(1, 2, 2, 4, 4), out_channels=2)
  repeats = 2 if quick else 5
  t0, rows = time.perf_counter(), []
  for size in sizes:
    for prec in precisions:
      if time.perf_counter() - t0 > budget_s:
        rows += [
          {"op": op, "size": f"2x1x{size}^3", "precision": prec, "skipped": "budget"}
          for op in ("forward", "train step")
        ]
        continue
      rows += _speed_case(arch, size, prec, repeats)
  return rows


def _speed_case(arch: dict, size: int, prec: str, repeats: int) -> list[dict]:
  import jax
  import numpy as np
  import torch
  from monai.losses import DiceCELoss
  from monai.networks.nets import SegResNetDS as TorchNet

  from assft_jax.engine import create_state, make_mesh, make_optimizer, make_train_step
  from assft_jax.engine import timing as engine_timing
  from assft_jax.models import SegResNetDS, init_variables

  dev = _torch_device()
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, size, size, size, 1)).astype(np.float32)
  y = rng.integers(0, 2, (2, size, size, size)).astype(np.int32)
  module = SegResNetDS(**arch, in_channels=1, conv_impl="native")
  variables = jax.device_put(init_variables(module, jax.random.key(0)))
  compute = module.clone(dtype=jax.numpy.bfloat16) if prec == "bf16" else module
  fwd = engine_timing.jit(compute.apply)
  tx = make_optimizer(1e-4)
  step = make_train_step(module, tx, make_mesh(jax.local_devices()[:1]), 2, precision=prec)
  holder = {"s": create_state(variables, tx)}
  xd = jax.device_put(x)
  batch = {"image": x, "label": y}
  key = jax.random.key(0)

  def jtrain():
    holder["s"], m = step(holder["s"], batch, key)
    return m

  net = TorchNet(spatial_dims=3, in_channels=1, **arch).to(dev)
  opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=1e-5)
  loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
  xt = torch.from_numpy(np.moveaxis(x, -1, 1).copy()).to(dev)
  yt = torch.from_numpy(y).long()[:, None].to(dev)

  def ac():
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=prec == "bf16")

  def tfwd():
    net.eval()
    with torch.no_grad(), ac():
      return net(xt)

  def ttrain():
    net.train()
    opt.zero_grad(set_to_none=True)
    with ac():
      loss = loss_fn(net(xt), yt)
    loss.backward()
    opt.step()
    return loss

  def tsync():
    if dev.type == "cuda":
      torch.cuda.synchronize()

  rows = []
  for op, jf, tf in (
    ("forward", lambda: fwd(variables, xd), tfwd),
    ("train step", jtrain, ttrain),
  ):
    js = _median_time(lambda jf=jf: jax.block_until_ready(jf()), lambda: None, repeats)
    ts = _median_time(tf, tsync, repeats)
    rows.append(
      {
        "op": op,
        "size": f"2x1x{size}^3",
        "precision": prec,
        "init_filters": arch["init_filters"],
        "jax_s": js,
        "monai_s": ts,
        "ratio": js / ts,
      }
    )
  return rows


def _gpu_sampler(stop: threading.Event, samples: list[float]) -> None:
  """nvidia-smi's GPU utilization every 0.5 s until `stop` (nothing without nvidia-smi)."""
  while not stop.is_set():
    try:
      out = subprocess.run(
        ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=5,
      )
      if out.returncode == 0 and out.stdout.strip():
        samples.append(float(out.stdout.strip().splitlines()[0]))
    except (OSError, subprocess.SubprocessError, ValueError):
      return
    stop.wait(0.5)


def sweep(out: Path, quick: bool, budget_s: float) -> dict:
  """(iii): the arms of one seed as a sweep with batched runs, within `budget_s`."""
  flagfile = "experiments/flags/" + ("smoke.flags" if quick else "benchmark.flags")
  arms = "assft,random,entropy" if quick else BENCH_ARMS
  k, jobs = (2, 1) if quick else (8, 4)  # 4 processes share the GPU, each up to 8 runs
  cmd = [sys.executable, "-m", "experiments.sweep", f"--flagfile={flagfile}"]
  cmd += [f"--strategies={arms}", "--seeds=0", f"--out={out / 'sweep'}", "--noreport"]
  cmd += [f"--runs_per_program={k}", f"--jobs={jobs}", f"--cache_dir={out / 'sweep' / 'cache'}"]
  samples: list[float] = []
  stop = threading.Event()
  sampler = threading.Thread(target=_gpu_sampler, args=(stop, samples), daemon=True)
  sampler.start()
  t0 = time.perf_counter()
  log = open(out / "sweep.log", "wb")  # a stream, read by whoever checks the run
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
  try:
    rc = proc.wait(timeout=max(1.0, budget_s))
  except subprocess.TimeoutExpired:
    proc.terminate()
    proc.wait()
    rc = None
  finally:
    log.close()
  wall = time.perf_counter() - t0
  stop.set()
  sampler.join()
  from assft_jax.sweep import is_complete

  cells = sorted(p.parent for p in (out / "sweep").glob("*/seed_0/summary.json"))
  done = [str(c.parent.name) for c in cells if is_complete(c)]
  return {
    "command": " ".join(cmd[1:]),
    "runs_per_program": k,
    "jobs": jobs,
    "arms": arms.split(","),
    "exit_code": rc,
    "finished_in_budget": rc is not None,
    "wall_s": wall,
    "cells_complete": done,
    "gpu_busy_fraction": statistics.mean(samples) / 100 if samples else None,
    "gpu_samples": len(samples),
  }


def _text(res: dict) -> str:
  lines = [f"device: {res['device']} (jax {res['jax']}, torch {res['torch']})", ""]
  lines.append("(i) parity against MONAI on the same device, max |difference| (tolerance 1e-4)")
  lines += [
    f"  {r['case']:<36} {r['max_abs']:.2e}  {'ok' if r['ok'] else 'FAILED'}" for r in res["parity"]
  ]
  lines += ["", "(ii) JAX / MONAI, median seconds (lower ratio is better)"]
  lines += [
    f"  {r['op']:<10} {r['size']:<12} {r['precision']:<5} "
    + (
      f"if{r['init_filters']}  jax {r['jax_s']:.4f}  monai {r['monai_s']:.4f}  "
      f"ratio {r['ratio']:.2f}"
      if "ratio" in r
      else f"skipped ({r['skipped']})"
    )
    for r in res["speed"]
  ]
  s = res["sweep"]
  busy = "n/a" if s["gpu_busy_fraction"] is None else f"{100 * s['gpu_busy_fraction']:.0f} %"
  lines += [
    "",
    f"(iii) one seed of {len(s['arms'])} arms, {s['runs_per_program']} runs per program: "
    f"{s['wall_s']:.0f} s wall, {len(s['cells_complete'])} cells complete"
    + ("" if s["finished_in_budget"] else " (stopped at the budget)")
    + f", GPU busy {busy}",
  ]
  return "\n".join(lines) + "\n"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  import jax
  import torch

  from assft_jax import atomic, errors

  with errors.cli_errors():
    out = Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    _exact_precision()
    res = {
      "device": str(jax.devices()[0].device_kind),
      "backend": jax.default_backend(),
      "jax": jax.__version__,
      "torch": torch.__version__,
      "quick": FLAGS.quick,
      "parity": parity(FLAGS.quick),
    }
    # fp32 rows at full float32 on both sides too; at most ~40 % of the budget
    res["speed"] = speed(FLAGS.quick, 0.4 * FLAGS.budget_s)
    left = FLAGS.budget_s - (time.perf_counter() - t0)
    res["sweep"] = sweep(out, FLAGS.quick, left)
    res["wall_s"] = time.perf_counter() - t0
    atomic.write_json(out / "device_check.json", res)
    atomic.write_text(out / "device_check.txt", _text(res))
    print(_text(res), end="")
    if not all(r["ok"] for r in res["parity"]):
      raise SystemExit(1)


if __name__ == "__main__":
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # torch shares the GPU
  app.run(main)
