"""Several runs in one process, their training stages run as one program.

Each run is the ordinary loop (`loop.run`) in its own thread, with its own workdir, lock,
queries, oracle and checkpoints. Only its training stages meet: a run's
`components.Trainer.fit` hands its stage to the group's `Batcher` and waits. When every
run still going waits for a stage, the batcher trains the stages that share a schedule
(same network, optimiser settings and step count) together, K at a time, in one jitted
step over a leading run axis (`engine.make_train_step(runs=K)`, `engine.fine_tune_runs`),
and hands each run its own result; a stage with no partner trains alone. The host work
between stages (scoring, queries, writes) runs in the runs' own threads.

On a CPU each run's own compiled step is applied in turn ("loop"), so each computes
exactly what it computes alone; on an accelerator the runs are vectorised into one jitted
step ("vmap"), the K runs' convolutions then one grouped convolution, equal to the runs
alone up to float32 summation order.

A group is K independent runs: none reads another's results, and each resumes on its own
(a killed group reruns with the same command; every run continues after its last
complete round, and the batcher pairs whatever stages meet again).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import jax

from assft_jax import config as config_lib
from assft_jax import engine

log = logging.getLogger("assft_jax.group")


def default_batched() -> str:
  """ "loop" on a CPU (each run exactly as alone, and the bench measured no gain from
  vectorising there), else "vmap"."""
  return "loop" if jax.default_backend() == "cpu" else "vmap"


@dataclasses.dataclass
class _Stage:
  """One run's training stage, waiting for the batcher."""

  trainer: Any  # components.Trainer
  key: tuple
  run: engine.train.RunStage
  epochs: int
  steps_per_epoch: int
  done: threading.Event = dataclasses.field(default_factory=threading.Event)
  result: Any = None


class Batcher:
  """Gathers the runs' training stages and trains those that share a schedule together.

  `runs` is the number of threads that will call `fit`; each calls `finish()` once when
  its run ends (also by an error), so the batcher never waits for a run that is gone.
  """

  def __init__(self, runs: int, batched: str | None = None, max_together: int | None = None):
    self._cv = threading.Condition()
    self._live = runs
    self._waiting: list[_Stage] = []
    self._steps: dict[tuple, Any] = {}
    self.batched = batched or default_batched()
    self.max_together = max_together or runs
    self.programs: list[int] = []  # how many stages each program trained (for the tests)

  def fit(self, trainer, state, loader, rng, epochs: int, steps_per_epoch: int, **where):
    """Blocks until this stage is trained (with its partners); returns (state, history) or
    raises its TrainingDiverged, as `engine.fine_tune` would."""
    cfg = trainer.cfg.train
    key = (
      trainer.module,
      len(trainer.class_names),
      epochs,
      steps_per_epoch,
      cfg.lr,
      cfg.weight_decay,
      cfg.clip_norm,
      cfg.precision,
      cfg.augment,
      cfg.batch_size,
      tuple(cfg.patch),
    )
    stage = _Stage(
      trainer, key, engine.train.RunStage(state, loader, rng, **where), epochs, steps_per_epoch
    )
    with self._cv:
      self._waiting.append(stage)
      self._cv.notify_all()
    stage.done.wait()
    if isinstance(stage.result, BaseException):
      raise stage.result
    return stage.result

  def finish(self) -> None:
    """A run's thread ends: the batcher stops waiting for it."""
    with self._cv:
      self._live -= 1
      self._cv.notify_all()

  def serve(self) -> None:
    """The batcher's loop (the calling thread's): whenever every live run waits for a
    stage, train them, grouped by schedule; returns once no run is left."""
    while True:
      with self._cv:
        self._cv.wait_for(lambda: self._live == 0 or len(self._waiting) >= self._live)
        if self._live == 0 and not self._waiting:
          return
        batch, self._waiting = self._waiting, []
      groups: dict[tuple, list[_Stage]] = {}
      for s in batch:
        groups.setdefault(s.key, []).append(s)
      for stages in groups.values():
        for i in range(0, len(stages), self.max_together):
          self._train(stages[i : i + self.max_together])

  def _train(self, stages: list[_Stage]) -> None:
    first = stages[0]
    try:
      step = self._step(first, len(stages))
      results = engine.train.fine_tune_runs(
        [s.run for s in stages], step, first.epochs, first.steps_per_epoch
      )
    except Exception as e:  # a bug or a bad input: every run of the program hears of it
      results = [e] * len(stages)
    self.programs.append(len(stages))
    for s, r in zip(stages, results):
      s.result = r
      s.done.set()

  def _step(self, stage: _Stage, k: int):
    """One compiled step per (schedule, K): equal stages of later rounds reuse it."""
    key = (stage.key, k)
    if key not in self._steps:
      t = stage.trainer
      tx, _ = t._step_for(stage.epochs * stage.steps_per_epoch)
      cfg = t.cfg.train
      aug = engine_augment(cfg)
      self._steps[key] = engine.make_train_step(
        t.module,
        tx,
        t.mesh,
        len(t.class_names),
        precision=cfg.precision,
        augment_cfg=aug,
        runs=k,
        batched=self.batched,
      )
    return self._steps[key]


def engine_augment(train_cfg: config_lib.TrainConfig):
  from assft_jax.data import AugmentConfig

  return AugmentConfig() if train_cfg.augment else None


def run_group(
  configs: Sequence[config_lib.RunConfig],
  run: Callable[[config_lib.RunConfig, Batcher], Any],
  batched: str | None = None,
  max_together: int | None = None,
) -> list[Any]:
  """Runs `run(cfg, batcher)` for every config, each in its own thread, the batcher in this
  one; returns each run's result or the exception it ended with."""
  batcher = Batcher(len(configs), batched, max_together)
  results: list[Any] = [None] * len(configs)

  def one(i: int) -> None:
    try:
      results[i] = run(configs[i], batcher)
    except BaseException as e:  # reported per run by the caller
      results[i] = e
    finally:
      batcher.finish()

  threads = [
    threading.Thread(target=one, args=(i,), name=f"run-{i}", daemon=True)
    for i in range(len(configs))
  ]
  for t in threads:
    t.start()
  batcher.serve()
  for t in threads:
    t.join()
  return results
