"""Engine: loss, sharded train step and stage loop, sliding-window inference, the
scoring pass, hard predictions, evaluation, checkpoints and the run's time split."""

from assft_jax.engine.checkpoint import latest_step, restore_state, save_state
from assft_jax.engine.evaluate import dice_per_class, evaluate, summarize, write_prediction
from assft_jax.engine.infer import (
  importance_map,
  sliding_window,
  sliding_window_predict,
  window_starts,
)
from assft_jax.engine.losses import dice_ce_loss, hard_dice
from assft_jax.engine.predict import iter_predictions, predict_labels
from assft_jax.engine.score import embed0, score_pass
from assft_jax.engine.timing import Timing, compile_seconds
from assft_jax.engine.train import (
  TrainingDiverged,
  create_state,
  fine_tune,
  make_mesh,
  make_optimizer,
  make_train_step,
  shard_batch,
  variables_of,
)

__all__ = [
  "Timing",
  "compile_seconds",
  "TrainingDiverged",
  "create_state",
  "dice_ce_loss",
  "dice_per_class",
  "embed0",
  "evaluate",
  "fine_tune",
  "hard_dice",
  "importance_map",
  "iter_predictions",
  "latest_step",
  "make_mesh",
  "make_optimizer",
  "make_train_step",
  "predict_labels",
  "restore_state",
  "save_state",
  "score_pass",
  "shard_batch",
  "sliding_window",
  "sliding_window_predict",
  "summarize",
  "variables_of",
  "window_starts",
  "write_prediction",
]
