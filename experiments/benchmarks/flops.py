"""Analytic conv FLOP counts of SegResNetDS (MONAI's direct convolutions), for GFLOP/s.

Counts 2 * MACs of every conv as MONAI computes it (stride-2 3x3x3 downsample, stride-2
transposed 3x3x3 upsample, 3x3x3 block convs, 1x1x1 heads); norms, activations and the
loss are left out (a small fraction of the conv FLOPs). The GFLOP/s of both impls are
reported against this same useful work (the "s2d" block convs multiply no zero taps). A
train step is counted as 3x the forward (forward + input grad + weight grad), the usual
convention.
"""

from __future__ import annotations

from collections.abc import Sequence


def _conv(cin: int, cout: int, k: int, voxels: int) -> int:
  return 2 * k**3 * cin * cout * voxels


def segresnet_forward_flops(
  init_filters: int,
  in_channels: int,
  out_channels: int,
  blocks_down: Sequence[int],
  batch: int,
  size: int,
  dsdepth: int = 1,
) -> int:
  """FLOPs of one forward of SegResNetDS on [batch, size^3, in_channels] (isotropic,
  blocks_up all 1, like the model's default)."""
  levels = len(blocks_down)
  vox = [batch * (size // 2**lvl) ** 3 for lvl in range(levels)]
  ch = [init_filters * 2**lvl for lvl in range(levels)]
  total = _conv(in_channels, ch[0], 3, vox[0])  # conv_init
  for lvl, n_blocks in enumerate(blocks_down):
    total += n_blocks * 2 * _conv(ch[lvl], ch[lvl], 3, vox[lvl])
    if lvl < levels - 1:  # stride-2 downsample, output at the next level
      total += _conv(ch[lvl], ch[lvl + 1], 3, vox[lvl + 1])
  for lvl in range(levels - 2, -1, -1):  # decoder, deepest first
    # transposed conv: every input voxel meets the whole 3x3x3 kernel
    total += _conv(ch[lvl + 1], ch[lvl], 3, vox[lvl + 1])
    total += 2 * _conv(ch[lvl], ch[lvl], 3, vox[lvl])  # one SegResBlock (blocks_up = 1)
    if lvl < max(dsdepth, 1):
      total += _conv(ch[lvl], out_channels, 1, vox[lvl])  # head
  return total
