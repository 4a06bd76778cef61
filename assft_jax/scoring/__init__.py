"""Scoring: jitted voxel maps and per-case reductions (`kernels`), ASSFT's Eq. 1-26
(`assft`)."""

from assft_jax.scoring import assft, kernels
from assft_jax.scoring.kernels import STAT_KEYS, badge_embedding, reduce_case_stats

__all__ = ["assft", "kernels", "STAT_KEYS", "badge_embedding", "reduce_case_stats"]
