"""What one run holds while it goes: its workdir, data, oracle and trainer.

`loop.py` speaks to a Session (fit, score, embed0, predict, evaluate) and to its oracle,
so Algorithm 1 reads as the paper writes it. The parts themselves are built by
`components` from the RunConfig; this file adds what belongs to a run: the round folders
its training logs and NaN checkpoints go to, the stage seeds, and who labels.

Opening is two steps, so that the errors a user can cause show before any slow work:
`components.open_data` (index, preprocess, split: bad files and flags show here), then
the loop's own checks (the budget against the pool), then `Session.open` (the model,
which may pre-train the phantom source encoder).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from assft_jax import components
from assft_jax import config as config_lib
from assft_jax import oracle as oracle_lib
from assft_jax import workdir as wd_lib
from assft_jax.components import RunData
from assft_jax.engine import predict as engine_predict

log = logging.getLogger("assft_jax.session")


@dataclasses.dataclass
class Session:
  cfg: config_lib.RunConfig
  workdir: Path
  data: RunData
  oracle: oracle_lib.Oracle
  trainer: components.Trainer

  @classmethod
  def open(
    cls, cfg: config_lib.RunConfig, workdir: Path, data: RunData, batcher: Any = None
  ) -> Session:
    """batcher: the group's (assft_jax.group) when this run shares a process with others."""
    trainer = components.Trainer.open(cfg, data)
    trainer.batcher = batcher
    oracle = make_oracle(cfg, workdir, data, trainer.module)
    return cls(cfg, Path(workdir), data, oracle, trainer)

  @property
  def module(self) -> Any:
    return self.trainer.module

  @property
  def variables0(self) -> Any:
    """F(0): the pre-trained encoder with a fresh decoder."""
    return self.trainer.variables0

  @property
  def volumes(self) -> Mapping[str, Any]:
    return self.data.volumes

  @property
  def class_names(self) -> tuple[str, ...]:
    return self.data.dataset.class_names

  @property
  def timing(self) -> dict[str, float]:
    """Seconds since `open`: {compile_s, train_s, score_s, predict_s, evaluate_s,
    total_s}. compile_s is XLA's (engine.timing) and overlaps the phase that compiled."""
    return self.trainer.clock.as_dict()

  def carry_timing(self, earlier: Mapping[str, float] | None) -> None:
    """Counts the seconds of this run's earlier processes (from its summary) in `timing`."""
    self.trainer.clock.carry(dict(earlier or {}))

  def fit(
    self,
    variables,
    labels: Mapping[str, np.ndarray],
    pseudo: Mapping[str, np.ndarray],
    epochs: int,
    *,
    round_: int,
    stage: str,
  ):
    """Fine-tunes from `variables` on labeled ∪ pseudo cases for `epochs` epochs (cut to
    --max_stage_steps, `config.stage_epochs`); returns new variables.

    The epoch records go to round_XXX/train_<stage>.jsonl. On a non-finite loss the last
    good state goes to round_XXX/diverged_<stage>/ and TrainingDiverged is raised.
    """
    targets = {**labels, **pseudo}
    epochs, _ = config_lib.stage_epochs(self.cfg, len(targets), epochs)
    rd = wd_lib.round_dir(self.workdir, round_)
    log_path = rd / f"train_{stage}.jsonl"
    # A stage reruns whole after a kill or a NaN stop: the records (maybe a half line) of
    # the abandoned attempt go, so the log holds the attempt whose network is kept.
    log_path.unlink(missing_ok=True)
    return self.trainer.fit(
      variables,
      targets,
      epochs,
      components.stage_seed(self.cfg.seed, round_, stage),
      round_=round_,
      desc=f"r{round_} {stage}",
      log_path=log_path,
      diverged_dir=rd / f"diverged_{stage}",
    )

  def score(self, variables, ids: Sequence[str], r: int, R: int) -> dict:
    """Per-case stats of F(r) for the strategies (`components.Trainer.score`)."""
    return self.trainer.score(variables, ids, r, R)

  def embed0(self, ids: Sequence[str]) -> np.ndarray:
    """E(0) embeddings [N, F] of the pre-trained encoder (cached across rounds)."""
    return self.trainer.embed0(ids)

  def predict(self, variables, ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Hard labels {id: [D, H, W] int32} of `variables` on the preprocessed grid."""
    return self.trainer.predict(variables, ids)

  def evaluate(self, variables) -> dict:
    """`components.Trainer.evaluate` over the test split."""
    return self.trainer.evaluate(variables, self.data.split["test"])


def make_oracle(
  cfg: config_lib.RunConfig, workdir: Path, data: RunData, module: Any = None
) -> oracle_lib.Oracle:
  """The run's oracle; the manifest kind gets pre-annotations from the rounds' saved
  models of `module`'s architecture (none without a module)."""
  if cfg.al.oracle == "ground_truth":
    return oracle_lib.GroundTruthOracle(data.volumes)
  return oracle_lib.ManifestOracle(
    data.dataset,
    components.preprocess_config(cfg),
    workdir,
    Path(cfg.al.labels_dir),
    cfg.al.annotation_dir,
    predict=None if module is None else _query_model_outputs(cfg, workdir, module, data.volumes),
  )


def _query_model_outputs(cfg, workdir: Path, module, volumes) -> oracle_lib.Preannotator:
  """The manifest oracle's `predict(ids, r)`: the outputs of F(r-1), the model whose
  scores chose round r's query, read back from round r-1's saved network (the loop hands
  the oracle no model, and the saved one is F(r-1) also after a resume)."""

  def predict(ids: Sequence[str], r: int):
    variables = wd_lib.load_model(workdir, r - 1)
    for cid, pred in engine_predict.iter_outputs(
      module, variables, volumes, list(ids), **components.window_settings(cfg)
    ):
      yield cid, pred, volumes[cid].meta

  return predict
