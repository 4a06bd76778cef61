"""Train state, optimizer, the sharded train step and the fine-tuning stage loop.

The state is a plain dict {"params", "batch_stats", "opt_state", "step"} (big_vision
style, no TrainState class). One code path for 1 and N devices: the step is a single
`jax.jit` with NamedShardings on a 1-D mesh axis "data" -- state replicated, batch
split along its first axis. BatchNorm then sees the GLOBAL batch: XLA inserts the
all-reduce for the mean/variance, which is exactly cross-replica (Sync) BatchNorm, and
the gradients are the global-batch gradients without an explicit pmean.

Multi-host: call `jax.distributed.initialize()` first in every process; `make_mesh()`
then spans all global devices, and each process feeds its own slice of the global batch
(`shard_batch` builds the global array with `jax.make_array_from_process_local_data`);
checkpoints are written once, by process 0 (`save_state`). tests/test_multihost.py runs
this on 2 processes on localhost.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from assft_jax.engine import timing
from assft_jax.engine.checkpoint import save_state
from assft_jax.engine.losses import dice_ce_loss
from assft_jax.errors import AssftError

State = dict[str, Any]
StepFn = Callable[..., tuple[State, dict]]  # (state, batch, rng, halt=None) -> (state, metrics)
SYNC_EVERY = 25  # fine_tune's default steps between reads of the metrics (see there)


class TrainingDiverged(AssftError, RuntimeError):
  """A non-finite loss or gradient. `.state` is the last good state (the step that
  diverged was not applied); `.round`, `.desc` (the stage), `.step` (the global step that
  failed), `.epoch`, `.metrics`, `.saved_to` (its checkpoint directory, or None)."""

  def __init__(
    self,
    state: State,
    round_: int | None,
    desc: str,
    step: int,
    epoch: int,
    metrics: Mapping[str, float],
    saved_to: Path | None = None,
  ):
    self.state, self.round, self.desc, self.step, self.epoch = state, round_, desc, step, epoch
    self.metrics, self.saved_to = dict(metrics), saved_to
    kept = f"saved to {saved_to} and " if saved_to is not None else ""
    super().__init__(
      f"training diverged in round {round_}, stage {desc!r}, at global step {step} "
      f"(epoch {epoch}): non-finite loss={metrics.get('loss')} / "
      f"grad_norm={metrics.get('grad_norm')}; the update was not applied and the last "
      f"good state is {kept}kept in this exception's .state"
    )


# ---- optimizer and state -------------------------------------------------------------


def make_optimizer(
  lr: float = 1e-4,
  total_steps: int | None = None,
  weight_decay: float = 1e-5,
  power: float = 0.9,
  clip_norm: float | None = None,
) -> optax.GradientTransformation:
  """AdamW with the paper's polynomial decay lr * (1 - t/total_steps)^power to 0.

  total_steps None keeps lr constant. clip_norm clips the global gradient norm first.
  The schedule counter lives in opt_state, so a new stage (round) that should restart
  the decay gets a fresh opt_state from `create_state` (same tx: no recompile).
  """
  sched = optax.polynomial_schedule(lr, 0.0, power, total_steps) if total_steps else lr
  tx = optax.adamw(sched, weight_decay=weight_decay)
  if clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(clip_norm), tx)
  return tx


def create_state(variables: Mapping[str, Any], tx: optax.GradientTransformation) -> State:
  """{"params", "batch_stats" ({} without BatchNorm), "opt_state", "step": int32 0}.

  The arrays are copies: the train step donates the state, and the caller's
  `variables` (e.g. the pre-trained E(0) weights) must stay alive.
  """
  params = jax.tree.map(jnp.copy, variables["params"])
  return {
    "params": params,
    "batch_stats": jax.tree.map(jnp.copy, variables.get("batch_stats", {})),
    "opt_state": tx.init(params),
    "step": jnp.zeros((), jnp.int32),
  }


def variables_of(state: State) -> dict:
  """{"params", "batch_stats"} of a train state, for inference."""
  v = {"params": state["params"]}
  if state["batch_stats"]:
    v["batch_stats"] = state["batch_stats"]
  return v


# ---- mesh and sharding ---------------------------------------------------------------


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """1-D mesh with axis "data" over `devices` (default: all global devices)."""
  devs = np.asarray(list(devices) if devices is not None else jax.devices())
  return Mesh(devs, ("data",))


def shard_batch(batch: Mapping[str, Any], mesh: Mesh, axis: int = 0) -> dict:
  """Host batch -> global arrays split on "data" along `axis` (1 for a stack of runs'
  batches [K, B, ...]; this process's slice when multi-host)."""
  sh = NamedSharding(mesh, P(*([None] * axis), "data"))
  n = mesh.shape["data"] // jax.process_count()
  out = {}
  for k, v in batch.items():
    if isinstance(v, jax.Array) and v.sharding == sh:
      out[k] = v
      continue
    if np.shape(v)[axis] % max(n, 1):
      raise ValueError(
        f"batch[{k!r}] has batch size {np.shape(v)[axis]}, not divisible by "
        f"the {n} local devices of the 'data' mesh axis"
      )
    out[k] = (
      jax.make_array_from_process_local_data(sh, np.asarray(v))
      if jax.process_count() > 1
      else jax.device_put(v, sh)
    )
  return out


def _compute_module(module: nn.Module, precision: str) -> nn.Module:
  if precision == "fp32":
    return module
  if precision != "bf16":
    raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
  if not hasattr(module, "dtype"):
    raise ValueError(
      f"precision='bf16' needs a module with a `dtype` field, got {type(module).__name__}"
    )
  # params stay float32 (param_dtype); convs/activations run in bfloat16, BN stats and
  # the loss in float32.
  return module.clone(dtype=jnp.bfloat16)


# ---- the train step ------------------------------------------------------------------


def make_train_step(
  module: nn.Module,
  tx: optax.GradientTransformation,
  mesh: Mesh,
  num_classes: int,
  *,
  precision: str = "fp32",
  ds_weights: Sequence[float] | None = None,
  augment_cfg: Any = None,
  ignore_index: int | None = None,
  runs: int = 0,
  batched: str = "vmap",
) -> StepFn:
  """step(state, batch, rng, halt=None) -> (state, metrics).

  runs=K >= 1 makes the step of K independent runs at once (`fine_tune_runs` drives it).
  `batched` says how. "vmap": one jitted program over a leading run axis (state, batch
  [K, B, ...], rng [K] keys, halt [K], and every metric have it); the K runs'
  convolutions become one grouped convolution on an accelerator, the throughput mode.
  A vmapped run equals the run alone up to float32 summation order, which AdamW's first
  steps amplify on near-zero gradients (a weight whose gradient is near AdamW's eps can
  move by up to a learning rate). "loop": the single-run step applied to each run in turn
  (the state a list of K states; batch, rng, halt and metrics as for vmap): each run
  computes exactly what it computes alone, on any jax version.
  `step.jitted` is the jitted function (`step.jitted.traces()` = compilations).
  Remat of the encoder levels is a model option (SegResNetDS(remat=True)).
  """
  net = _compute_module(module, precision)
  repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  augment = None
  if augment_cfg is not None:
    from assft_jax.data.augment import augment_batch

    augment = augment_batch

  def loss_fn(params, batch_stats, image, label):
    variables = {"params": params}
    if batch_stats:
      variables["batch_stats"] = batch_stats
    out, mut = net.apply(variables, image, train=True, mutable=["batch_stats"])
    loss, metrics = dice_ce_loss(out, label, num_classes, ignore_index, ds_weights)
    return loss, (metrics, mut.get("batch_stats", batch_stats))

  def _step(state, batch, rng, halt):
    rng = jax.random.fold_in(rng, state["step"])
    image, label = batch["image"], batch["label"]
    if augment is not None:
      image, label = augment(rng, image, label, augment_cfg)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (metrics, batch_stats)), grads = grad_fn(
      state["params"], state["batch_stats"], image, label
    )
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    new = {
      "params": optax.apply_updates(state["params"], updates),
      "batch_stats": batch_stats,
      "opt_state": opt_state,
      "step": state["step"] + 1,
    }
    gnorm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(gnorm)
    # a diverged (or halted) step is not applied: the returned state stays the last good
    # one even though the input buffers were donated.
    new = jax.tree.map(lambda n, o: jnp.where(finite & ~halt, n, o), new, state)
    return new, dict(metrics, grad_norm=gnorm, finite=finite)

  if runs:  # the run axis stays whole on every device; each run's batch is split
    data = NamedSharding(mesh, P(None, "data"))
  if batched not in ("vmap", "loop"):
    raise ValueError(f"batched must be 'vmap' or 'loop', got {batched!r}")
  if runs and batched == "loop":
    return _loop_step(
      make_train_step(
        module,
        tx,
        mesh,
        num_classes,
        precision=precision,
        ds_weights=ds_weights,
        augment_cfg=augment_cfg,
        ignore_index=ignore_index,
      ),
      runs,
    )
  body = jax.vmap(_step) if runs else _step
  jitted = timing.jit(
    body,
    in_shardings=(repl, data, repl, repl),
    out_shardings=(repl, repl),
    donate_argnums=(0,),
  )
  go = jax.device_put(jnp.zeros((runs,) if runs else (), bool), repl)

  def step(state: State, batch: Mapping[str, Any], rng: jax.Array, halt: jax.Array | None = None):
    state = jax.device_put(state, repl)
    halt = go if halt is None else jax.device_put(halt, repl)
    return jitted(state, shard_batch(batch, mesh, axis=1 if runs else 0), _put_key(rng, repl), halt)

  step.jitted = jitted
  step.mesh = mesh
  step.runs = runs
  step.batched = batched if runs else None
  return step


def _loop_step(single: StepFn, runs: int) -> StepFn:
  """The "loop" form of `make_train_step(runs=K)`: `single` on each run's state in turn."""

  def step(states, batch, rng, halt=None):
    outs = [
      single(
        states[i],
        {key: v[i] for key, v in batch.items()},
        rng[i],
        None if halt is None else halt[i],
      )
      for i in range(runs)
    ]
    return [o[0] for o in outs], jax.tree.map(lambda *m: jnp.stack(m), *[o[1] for o in outs])

  step.jitted, step.mesh, step.runs, step.batched = single.jitted, single.mesh, runs, "loop"
  return step


def _put_key(rng: jax.Array, sharding: NamedSharding) -> jax.Array:
  """`rng` placed on `sharding`. With several processes jax places a host value on other
  processes' devices only if it is a plain array (it checks that every process passes the
  same one), so a typed key goes as its raw uint32 data and is wrapped again there."""
  if not jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    return jax.device_put(rng, sharding)
  data = jax.device_put(jax.random.key_data(rng), sharding)
  return jax.random.wrap_key_data(data, impl=jax.random.key_impl(rng))


# ---- the stage loop ------------------------------------------------------------------


def _append_jsonl(path: Path, record: dict) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "a") as f:
    f.write(json.dumps(record) + "\n")


def fine_tune(
  state: State,
  step: StepFn,
  loader: Iterable[Mapping[str, Any]],
  epochs: int,
  steps_per_epoch: int,
  rng: jax.Array,
  *,
  round_: int | None = None,
  log_path: str | os.PathLike | None = None,
  desc: str = "",
  diverged_dir: str | os.PathLike | None = None,
  progress: bool = True,
  sync_every: int = SYNC_EVERY,
) -> tuple[State, list[dict]]:
  """Runs `epochs * steps_per_epoch` steps drawing batches from `loader`.

  Returns (state, history): one record per epoch {round, epoch, step, loss, dice_loss,
  ce, dice, grad_norm (epoch means), compiles (the step's compilation count)}; the same
  records are appended to `log_path` (jsonl) when given. On a non-finite step it raises
  TrainingDiverged carrying the last good state; with `diverged_dir` that state is first
  saved there (orbax, `restore_state(diverged_dir)` reads it back). Nothing is written
  to `diverged_dir` otherwise: the caller saves the final state it keeps.

  The metrics stay on the device and are read every `sync_every` steps and at each
  epoch's end, one transfer for all the steps since the last read; no step waits for the
  one before, so an accelerator's queue never drains. A non-finite step halts the steps
  after it on the device (`make_train_step`'s halt) until the read finds it: the error
  then names that first bad step and carries the state from before it. The default 25
  moves the progress bar every 25 steps, computes at most 24 steps in vain after a
  divergence, and keeps at most 25 batches queued on the device.
  """
  if sync_every < 1:
    raise ValueError(f"fine_tune: sync_every must be >= 1, got {sync_every}")
  desc = desc or f"round {round_}"
  it = iter(loader)
  history: list[dict] = []
  log = Path(log_path) if log_path else None
  bar = tqdm(total=epochs * steps_per_epoch, desc=desc, disable=not progress, leave=False)
  start = int(state["step"])  # the global step counter: read once, then counted here
  halt = jnp.zeros((), bool)
  pending: list[tuple[int, dict]] = []  # (global step, device metrics) since the last read
  try:
    for epoch in range(epochs):
      sums: dict[str, float] = defaultdict(float)
      for i in range(steps_per_epoch):
        batch = next(it, None)
        if batch is None:
          raise ValueError(
            f"fine_tune: the loader ran out at epoch {epoch}, step {i}; it "
            f"must yield epochs * steps_per_epoch = "
            f"{epochs * steps_per_epoch} batches"
          )
        state, metrics = step(state, batch, rng, halt=halt)
        halt = halt | ~metrics["finite"]
        pending.append((start + epoch * steps_per_epoch + i, metrics))
        if len(pending) < sync_every and i < steps_per_epoch - 1:
          continue
        for at, m in _read(pending):
          if not m.pop("finite"):
            if log is not None:
              _append_jsonl(
                log, {"round": round_, "epoch": epoch, "step": at, "diverged": True, **m}
              )
            saved = _save_diverged(diverged_dir, state) if diverged_dir is not None else None
            raise TrainingDiverged(state, round_, desc, at, epoch, m, saved)
          for k, v in m.items():
            sums[k] += v
        bar.update(len(pending))
        bar.set_postfix(loss=f"{m['loss']:.4f}", dice=f"{m['dice']:.3f}")
        pending = []
      rec = {
        "round": round_,
        "epoch": epoch,
        "step": start + (epoch + 1) * steps_per_epoch,
        **{k: v / steps_per_epoch for k, v in sums.items()},
        "compiles": _compiles(step),
      }
      history.append(rec)
      if log is not None:
        _append_jsonl(log, rec)
  finally:
    bar.close()
  return state, history


@dataclasses.dataclass
class RunStage:
  """One run's part of `fine_tune_runs`: its state, batches, key and where it reports."""

  state: State
  loader: Iterable[Mapping[str, Any]]
  rng: jax.Array
  round_: int | None = None
  desc: str = ""
  log_path: str | os.PathLike | None = None
  diverged_dir: str | os.PathLike | None = None


def stack(trees: Sequence[Any]) -> Any:
  """K pytrees of equal structure -> one whose leaves have a leading axis K."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree: Any, k: int) -> list[Any]:
  """The inverse of `stack`: the K pytrees along the leading axis."""
  return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(k)]


def fine_tune_runs(
  runs: Sequence[RunStage],
  step: StepFn,
  epochs: int,
  steps_per_epoch: int,
  *,
  sync_every: int = SYNC_EVERY,
) -> list[tuple[State, list[dict]] | TrainingDiverged]:
  """`fine_tune` of K independent runs at once with a `make_train_step(..., runs=K)` step:
  each step draws one batch from every run's loader and steps them together. Returns,
  per run, (state, history) as `fine_tune` would, or the TrainingDiverged it would raise
  (its state the last good one, saved to its diverged_dir first); a diverged run is
  halted on the device while the others go on. Each run's records go to its log_path."""
  k = len(runs)
  if step.runs != k:
    raise ValueError(f"fine_tune_runs: a step for {step.runs} runs, {k} runs given")
  its = [iter(r.loader) for r in runs]
  loop = step.batched == "loop"
  state = [r.state for r in runs] if loop else stack([r.state for r in runs])
  rngs = jnp.stack([r.rng for r in runs])
  start = [int(r.state["step"]) for r in runs]
  halt = jnp.zeros((k,), bool)
  failed: dict[int, TrainingDiverged] = {}
  histories: list[list[dict]] = [[] for _ in runs]
  logs = [Path(r.log_path) if r.log_path else None for r in runs]
  pending: list[tuple[int, dict]] = []
  for epoch in range(epochs):
    sums: list[dict[str, float]] = [defaultdict(float) for _ in runs]
    for i in range(steps_per_epoch):
      batches = [next(it, None) for it in its]
      if any(b is None for b in batches):
        raise ValueError(
          f"fine_tune_runs: a loader ran out at epoch {epoch}, step {i}; each must yield "
          f"epochs * steps_per_epoch = {epochs * steps_per_epoch} batches"
        )
      batch = {key: np.stack([b[key] for b in batches]) for key in batches[0]}
      state, metrics = step(state, batch, rngs, halt=halt)
      halt = halt | ~metrics["finite"]
      pending.append((epoch * steps_per_epoch + i, metrics))
      if len(pending) < sync_every and i < steps_per_epoch - 1:
        continue
      host = jax.device_get([m for _, m in pending])
      for (at, _), m in zip(pending, host):
        for r in range(k):
          if r in failed:
            continue
          one = {name: float(v[r]) for name, v in m.items()}
          if not one.pop("finite"):
            # a copy: the run keeps stepping (halted), and each step donates its buffers
            now = jax.tree.map(jnp.copy, state[r]) if loop else unstack(state, k)[r]
            failed[r] = _diverged_run(runs[r], now, start[r] + at, epoch, one)
            if logs[r] is not None:
              rec = {"round": runs[r].round_, "epoch": epoch, "step": start[r] + at}
              _append_jsonl(logs[r], {**rec, "diverged": True, **one})
            continue
          for name, v in one.items():
            sums[r][name] += v
      pending = []
    for r in range(k):
      if r in failed:
        continue
      rec = {
        "round": runs[r].round_,
        "epoch": epoch,
        "step": start[r] + (epoch + 1) * steps_per_epoch,
        **{name: v / steps_per_epoch for name, v in sums[r].items()},
        "compiles": _compiles(step),
      }
      histories[r].append(rec)
      if logs[r] is not None:
        _append_jsonl(logs[r], rec)
  states = state if loop else unstack(state, k)
  return [failed[r] if r in failed else (states[r], histories[r]) for r in range(k)]


def _diverged_run(run: RunStage, state: State, at: int, epoch: int, m: dict) -> TrainingDiverged:
  """The TrainingDiverged `fine_tune` would raise for this run, its state saved first. The
  run was halted at that step, so the state is its last good one."""
  saved = _save_diverged(run.diverged_dir, state) if run.diverged_dir is not None else None
  desc = run.desc or f"round {run.round_}"
  return TrainingDiverged(state, run.round_, desc, at, epoch, m, saved)


def _read(pending: list[tuple[int, dict]]) -> list[tuple[int, dict[str, float]]]:
  """The metrics of the steps since the last read, in one device-to-host transfer (the
  loop's only one, besides the start step)."""
  host = jax.device_get([m for _, m in pending])
  return [(at, {k: float(v) for k, v in m.items()}) for (at, _), m in zip(pending, host)]


def _save_diverged(directory: str | os.PathLike, state: State) -> Path:
  # The whole folder is replaced: the step counter restarts every stage, so an older
  # divergence's checkpoint could carry a higher step and win `restore_state`'s "latest".
  save_state(directory, state, replace=True)
  return Path(directory)


def _compiles(step: StepFn) -> int | None:
  jitted = getattr(step, "jitted", None)
  return jitted.traces() if jitted is not None else None
