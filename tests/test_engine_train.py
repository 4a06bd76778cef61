"""Train step and stage loop on a tiny SegResNetDS (init_filters 4, 3 levels, 16^3):
fit, divergence, checkpoints, bf16, augmentation, remat, deep supervision."""

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from assft_jax.engine import (
  TrainingDiverged,
  create_state,
  fine_tune,
  latest_step,
  make_mesh,
  make_optimizer,
  make_train_step,
  restore_state,
  save_state,
)
from assft_jax.models import SegResNetDS, load_pretrained, model_config, save_pretrained
from tests._engine_helpers import fast_variables, np_deep_supervision_loss, phantom_batch

S = 16


def loader(seed, n=2):
  rng = np.random.default_rng(seed)
  while True:
    yield phantom_batch(rng, n)


@pytest.fixture(scope="module")
def setup():
  module = SegResNetDS(init_filters=4, out_channels=2, blocks_down=(1, 1, 1))
  variables = fast_variables(module, S)
  tx = make_optimizer(3e-3, 30)
  step = make_train_step(module, tx, make_mesh(), 2)
  return module, variables, tx, step


def _host(tree):
  return jax.tree.map(lambda a: np.array(a), tree)


def test_tiny_fit_and_no_recompile(setup, tmp_path):
  module, variables, tx, step = setup
  log = tmp_path / "log.jsonl"
  state, hist = fine_tune(
    create_state(variables, tx),
    step,
    loader(0),
    6,
    5,
    jax.random.key(1),
    round_=1,
    log_path=log,
    diverged_dir=tmp_path / "diverged",
    progress=False,
  )
  assert not (tmp_path / "diverged").exists()  # written only on divergence
  losses = [h["loss"] for h in hist]
  assert losses[-1] < 0.5 * losses[0], losses
  assert hist[-1]["dice"] > 0.6, hist[-1]
  assert int(state["step"]) == 30 and len(log.read_text().splitlines()) == 6
  # a second round with the same shapes (fresh opt_state, same tx) must not recompile
  state2, hist2 = fine_tune(
    create_state(_host(state), tx),
    step,
    loader(1),
    1,
    2,
    jax.random.key(2),
    round_=2,
    progress=False,
  )
  assert hist[-1]["compiles"] == 1 and hist2[-1]["compiles"] == 1


@pytest.mark.parametrize("how", ["nan_batch", "huge_lr"])
def test_divergence_stops_and_saves_last_good_state(setup, tmp_path, how):
  """A NaN image (step 3) or an lr of 1e30 (the 2nd update overflows the weights):
  the exception names round, stage and global step, and `diverged_dir` holds exactly
  its `.state`, replacing an older divergence's checkpoint of a higher step."""
  module, variables, tx, step = setup
  good = loader(3)
  if how == "nan_batch":
    batches = itertools.chain(
      [next(good), next(good), next(good)],
      [dict(next(good), image=np.full((2, S, S, S, 1), np.nan, np.float32))],
    )
    fail_step, epoch = 3, 1
  else:
    tx = make_optimizer(1e30)
    step = make_train_step(module, tx, make_mesh(), 2)
    batches, fail_step, epoch = good, None, None
  stale = create_state(variables, tx)
  stale["step"] = stale["step"] + 1000
  save_state(tmp_path / "div", stale)
  with pytest.raises(TrainingDiverged, match=r"round 7, stage 'r7 pseudo', at global step") as ei:
    fine_tune(
      create_state(variables, tx),
      step,
      batches,
      2,
      2,
      jax.random.key(0),
      round_=7,
      desc="r7 pseudo",
      diverged_dir=tmp_path / "div",
      log_path=tmp_path / "log.jsonl",
      progress=False,
    )
  err = ei.value
  assert (err.round, err.desc, err.saved_to) == (7, "r7 pseudo", tmp_path / "div")
  assert f"global step {err.step} (epoch {err.epoch})" in str(err)
  if fail_step is not None:
    assert (err.step, err.epoch) == (fail_step, epoch)
  last = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])
  assert last["diverged"] and last["step"] == err.step and not np.isfinite(last["loss"])
  kept = _host(err.state)
  assert int(kept["step"]) == err.step
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(kept["params"]))
  assert latest_step(tmp_path / "div") == err.step  # the stale step-1000 one is gone
  restored = restore_state(tmp_path / "div", create_state(variables, tx))
  assert jax.tree.structure(restored) == jax.tree.structure(kept)
  for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(_host(restored))):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)


def test_save_restore_bit_identical(setup, tmp_path):
  module, variables, tx, step = setup
  state, _ = fine_tune(
    create_state(variables, tx), step, loader(4), 1, 2, jax.random.key(0), progress=False
  )
  ref = _host(state)
  save_state(tmp_path, state)
  got = restore_state(tmp_path, create_state(variables, tx))
  assert jax.tree.structure(got) == jax.tree.structure(ref)
  for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(_host(got))):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)


def test_bf16_close_to_fp32(setup):
  """One step in bf16 compute vs fp32. Stated tolerances: loss and grad norm within
  0.5 % (observed 2e-4), params within 1e-2 absolute (Adam's first step moves a weight
  by ~lr = 3e-3 in the sign of its gradient; a bf16 sign flip on a ~0 gradient costs
  2 lr = 6e-3, observed), batch_stats within 2 % of their scale (observed 0.5 %)."""
  module, variables, tx, step32 = setup
  step16 = make_train_step(module, tx, make_mesh(), 2, precision="bf16")
  batch = phantom_batch(np.random.default_rng(5), 2)
  s32, m32 = step32(create_state(variables, tx), batch, jax.random.key(0))
  s16, m16 = step16(create_state(variables, tx), batch, jax.random.key(0))
  # float32 master weights, optimiser moments, BatchNorm statistics and loss.
  for part in ("params", "opt_state", "batch_stats"):
    floats = [x for x in jax.tree.leaves(s16[part]) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and {x.dtype for x in floats} == {np.dtype(np.float32)}, part
  assert m16["loss"].dtype == np.float32
  np.testing.assert_allclose(float(m16["loss"]), float(m32["loss"]), rtol=5e-3)
  np.testing.assert_allclose(float(m16["grad_norm"]), float(m32["grad_norm"]), rtol=5e-3)
  for a, b in zip(
    jax.tree.leaves(_host(s16["batch_stats"])), jax.tree.leaves(_host(s32["batch_stats"]))
  ):
    np.testing.assert_allclose(a, b, atol=2e-2 * (np.abs(b).max() + 1e-6))
  for a, b in zip(jax.tree.leaves(_host(s16["params"])), jax.tree.leaves(_host(s32["params"]))):
    np.testing.assert_allclose(a, b, atol=1e-2)


def test_augmentation_inside_step_uses_fold_in(setup):
  """The step augments with fold_in(rng, step): equal to augmenting by hand first."""
  from assft_jax.data.augment import AugmentConfig, augment_batch

  module, variables, tx, plain = setup
  cfg = AugmentConfig(p_rotation=0.0, p_scale=0.0, p_mirror=1.0, p_noise=1.0)
  aug_step = make_train_step(module, tx, make_mesh(), 2, augment_cfg=cfg)
  batch = phantom_batch(np.random.default_rng(6), 2)
  rng = jax.random.key(3)
  _, m_aug = aug_step(create_state(variables, tx), batch, rng)
  img, lab = augment_batch(jax.random.fold_in(rng, 0), batch["image"], batch["label"], cfg)
  _, m_ref = plain(
    create_state(variables, tx), {"image": np.asarray(img), "label": np.asarray(lab)}, rng
  )
  _, m_raw = plain(create_state(variables, tx), batch, rng)
  np.testing.assert_allclose(float(m_aug["loss"]), float(m_ref["loss"]), rtol=1e-5)
  assert abs(float(m_aug["loss"]) - float(m_raw["loss"])) > 1e-4


@pytest.mark.slow
def test_remat_same_step(setup):
  """SegResNetDS(remat=True) (jax.checkpoint per level) gives the same step."""
  module, variables, tx, plain = setup
  remat = make_train_step(module.clone(remat=True), tx, make_mesh(), 2)
  batch = phantom_batch(np.random.default_rng(7), 2)
  s1, m1 = plain(create_state(variables, tx), batch, jax.random.key(0))
  s2, m2 = remat(create_state(variables, tx), batch, jax.random.key(0))
  np.testing.assert_allclose(float(m2["loss"]), float(m1["loss"]), rtol=1e-6)
  np.testing.assert_allclose(float(m2["grad_norm"]), float(m1["grad_norm"]), rtol=1e-5)
  for a, b in zip(jax.tree.leaves(_host(s1)), jax.tree.leaves(_host(s2))):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_deep_supervision_step_matches_numpy_reference(setup, tmp_path):
  """`load_pretrained(dsdepth=2)` of a saved dsdepth-1 model: the train step's loss is the
  numpy deep-supervision Dice+CE of the model's two outputs, unlike the dsdepth-1 loss on
  the same weights and batch; eval still returns only the full-resolution logits, equal
  to the dsdepth-1 model's (the full-resolution head is the saved one)."""
  module1, variables, tx1, step1 = setup
  save_pretrained(tmp_path / "m", model_config(module1), variables)
  batch = phantom_batch(np.random.default_rng(8), 2)
  losses, evals = {}, {}
  for d in (1, 2):
    module, v = load_pretrained(tmp_path / "m", dsdepth=d, rng=jax.random.key(1))
    assert module.dsdepth == d
    if d == 1:
      assert module == module1
      tx, step = tx1, step1
    else:
      tx = make_optimizer(3e-3, 30)
      step = make_train_step(module, tx, make_mesh(), 2)
    outs, _ = module.apply(v, batch["image"], train=True, mutable=["batch_stats"])
    outs = outs if d > 1 else [outs]
    assert [o.shape[1:4] for o in outs] == [(S,) * 3, (S // 2,) * 3][:d]
    ref = np_deep_supervision_loss([np.asarray(o) for o in outs], batch["label"], 2)
    _, m = step(create_state(v, tx), batch, jax.random.key(0))
    np.testing.assert_allclose(float(m["loss"]), ref, rtol=1e-5)
    losses[d] = float(m["loss"])
    evals[d] = np.asarray(module.apply(v, batch["image"]))
  assert abs(losses[2] - losses[1]) > 1e-3, losses
  assert evals[2].shape == evals[1].shape == (2, S, S, S, 2)
  np.testing.assert_allclose(evals[2], evals[1], rtol=1e-6, atol=1e-6)


# ---- no host sync per step -----------------------------------------------------------


def _counting(step):
  """The step, counting its calls in `.calls`."""

  def counted(*args, **kwargs):
    counted.calls += 1
    return step(*args, **kwargs)

  counted.calls = 0
  counted.jitted = step.jitted
  return counted


def test_metrics_read_only_every_k_steps(setup, monkeypatch):
  """Every device-to-host read of a jax.Array goes through its `_value` property (float,
  int, np.asarray, jax.device_get alike); recording how many steps had been dispatched at
  each read shows the loop reads at the start (the step counter), after every k = 3
  steps and at each epoch's end (steps 7 and 14), never per step."""
  module, variables, tx, step = setup
  counted = _counting(step)
  seen = []
  array_type = type(jax.numpy.zeros(()))
  value = array_type._value.fget

  def recording(self):
    seen.append(counted.calls)
    return value(self)

  state = create_state(variables, tx)
  monkeypatch.setattr(array_type, "_value", property(recording))
  _, hist = fine_tune(
    state, counted, loader(9), 2, 7, jax.random.key(0), progress=False, sync_every=3
  )
  monkeypatch.undo()
  assert counted.calls == 14 and len(hist) == 2
  assert sorted(set(seen)) == [0, 3, 6, 7, 10, 13, 14]
  with pytest.raises(ValueError, match="sync_every must be >= 1"):
    fine_tune(state, step, loader(9), 1, 1, jax.random.key(0), progress=False, sync_every=0)


def test_same_state_and_history_as_reading_every_step(setup):
  """Reading every 4 steps gives bit-identical parameters, BatchNorm statistics, optimizer
  state and epoch records to reading every step, and to calling the step by hand."""
  module, variables, tx, step = setup
  runs = [
    fine_tune(
      create_state(variables, tx),
      step,
      loader(10),
      2,
      5,
      jax.random.key(4),
      progress=False,
      sync_every=k,
    )
    for k in (1, 4)
  ]
  state, rng, batches = create_state(variables, tx), jax.random.key(4), loader(10)
  for _ in range(10):
    state, _ = step(state, next(batches), rng)
  assert runs[0][1] == runs[1][1]
  for got in (runs[1][0], state):
    assert jax.tree.structure(got) == jax.tree.structure(runs[0][0])
    for a, b in zip(jax.tree.leaves(_host(runs[0][0])), jax.tree.leaves(_host(got))):
      np.testing.assert_array_equal(a, b)


def test_nan_stop_names_first_bad_step_between_reads(setup, tmp_path):
  """k = 5, a NaN batch at step 2 of 8 and good batches after it: the read after step 5
  finds it; the error names step 2 and carries the state after steps 0-1 exactly (steps
  3-4 ran halted and changed nothing), and the log's last line is step 2's."""
  module, variables, tx, step = setup
  good = [phantom_batch(np.random.default_rng(20 + i), 2) for i in range(8)]
  nan = dict(good[2], image=np.full((2, S, S, S, 1), np.nan, np.float32))
  drawn = []

  def batches():
    for i, b in enumerate(good[:2] + [nan] + good[3:]):
      drawn.append(i)
      yield b

  with pytest.raises(TrainingDiverged, match=r"stage 'r3 labeled', at global step 2 ") as ei:
    fine_tune(
      create_state(variables, tx),
      step,
      batches(),
      1,
      8,
      jax.random.key(0),
      round_=3,
      desc="r3 labeled",
      log_path=tmp_path / "log.jsonl",
      progress=False,
      sync_every=5,
    )
  err = ei.value
  assert (err.step, err.epoch) == (2, 0) and not np.isfinite(err.metrics["loss"])
  assert drawn == [0, 1, 2, 3, 4]  # read after step 5
  ref = create_state(variables, tx)
  for b in good[:2]:
    ref, _ = step(ref, b, jax.random.key(0))
  for a, b in zip(jax.tree.leaves(_host(ref)), jax.tree.leaves(_host(err.state))):
    np.testing.assert_array_equal(a, b)
  last = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])
  assert last["diverged"] and last["step"] == 2
