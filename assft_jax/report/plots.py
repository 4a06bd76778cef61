"""The report's figures: Dice vs budget, the penalty-matrix heatmaps, the pseudo-label
box plot (Fig. 5), and a montage of the queried cases' slices."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from assft_jax import atomic  # noqa: E402
from assft_jax.report.collect import MATCHED, RunResult, method_sort_key  # noqa: E402
from assft_jax.report.stats import Summary  # noqa: E402

CLASS_CMAP = plt.get_cmap("tab10")


def save_figure(fig, path: Path, dpi: int = 110) -> None:
  """Atomic PNG write: render to a temporary file, then rename over `path`."""
  with atomic.atomic_path(path, suffix=".png") as tmp:
    fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
  plt.close(fig)


def _dice_panel(ax, s: Summary) -> None:
  xs = [b.round for b in s.budgets]
  method_cmap = plt.get_cmap("tab10" if len(s.methods) <= 10 else "tab20")
  band_alpha = 0.15 if len(s.methods) <= 4 else 0.06  # many bands overlap into a blur
  for i, m in enumerate(s.methods):
    pts = [(b.round, s.cells[(m, b.round)]) for b in s.budgets if (m, b.round) in s.cells]
    pts = [(r, c) for r, c in pts if len(c.seed_means)]
    if not pts:
      continue
    r = np.array([p[0] for p in pts])
    mu = np.array([100 * p[1].seed_mean for p in pts])
    sd = np.nan_to_num(np.array([100 * p[1].seed_sd for p in pts]))  # one seed: no band
    is_ref = m == s.reference
    color = "black" if is_ref else method_cmap(i % method_cmap.N)
    ls = "--" if m.endswith(MATCHED) else "-"
    ax.plot(r, mu, marker="o", ms=4, color=color, ls=ls, lw=2.4 if is_ref else 1.4, label=m)
    ax.fill_between(r, mu - sd, mu + sd, color=color, alpha=band_alpha, lw=0)
  for name, bound, style in (("lower bound", s.lower, ":"), ("upper bound", s.upper, "--")):
    if bound:
      mean = float(np.mean([c.seed_mean for c in bound.values()]))
      ax.axhline(100 * mean, color="0.3", ls=style, lw=1, label=name)
  ax.set_xticks(xs, [f"{b.label}\nr={b.round}" for b in s.budgets])
  ax.set_xlabel("query budget (round)")
  ax.set_ylabel("Dice (%), mean ± SD over seeds")
  lo, hi = ax.get_ylim()
  ax.set_ylim(bottom=max(0.0, lo), top=min(101.0, hi))
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
  ax.set_title(f"Dice vs query budget, {s.spec.title}", fontsize=10)


def plot_dice_vs_budget(summaries: Sequence[Summary], path: Path) -> None:
  """One panel per budget: each method's mean test Dice over seeds (± SD shaded) over
  the rounds, r = 0 included; matched controls dashed."""
  fig, axes = plt.subplots(
    len(summaries), 1, squeeze=False, figsize=(7.5, 4.5 * len(summaries)), layout="constrained"
  )
  for ax, s in zip(axes[:, 0], summaries):
    _dice_panel(ax, s)
  save_figure(fig, path)


def plot_ppm(summaries: Sequence[Summary], pens: Sequence, path: Path) -> None:
  """Heatmaps of the pairwise penalty matrices, a row per budget, raw and Holm: cell
  (row i, column j) is the share of budgets where i beat j; blank: never tested."""
  fig, axes = plt.subplots(
    len(summaries),
    2,
    squeeze=False,
    layout="constrained",
    figsize=(
      2 * (2.2 + 0.5 * len(pens[0].methods)),
      (1.8 + 0.45 * len(pens[0].methods)) * len(summaries),
    ),
  )
  cmap = plt.get_cmap("Reds").with_extremes(bad="white")
  for row, s, pen in zip(axes, summaries, pens):
    for ax, (holm, kind) in zip(row, ((False, "paired t, α = 0.05"), (True, "Holm"))):
      mat = np.where(pen.tested, pen.holm if holm else pen.raw, np.nan)
      ax.imshow(mat, cmap=cmap, vmin=0.0, vmax=1.0)
      n = len(pen.methods)
      for i in range(n):
        for j in range(n):
          if pen.tested[i, j]:
            color = "white" if mat[i, j] > 0.6 else "black"  # readable on dark cells
            ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=6, color=color)
      losses = pen.losses(holm)
      ax.set_xticks(
        range(n),
        [f"{m} ({v:.2f})" if not np.isnan(v) else m for m, v in zip(pen.methods, losses)],
        rotation=60,
        ha="right",
        fontsize=7,
      )
      ax.set_yticks(range(n), pen.methods, fontsize=7)
      ax.set_xlabel("column j: loses (average losses in brackets)", fontsize=8)
      ax.set_ylabel("row i: wins", fontsize=8)
      ax.set_title(f"PPM, row beats column, {kind}\n{s.spec.title}", fontsize=8)
  save_figure(fig, path)


def plot_pseudo_quality(panels: Sequence[tuple[str, dict]], path: Path) -> None:
  """Fig. 5: per panel (title, {round: PseudoCell}), a box of the selected (s) and the
  unselected (u) unlabeled cases' stage-1 Dice at each round."""
  fig, axes = plt.subplots(
    len(panels), 1, squeeze=False, layout="constrained", figsize=(7.0, 3.2 * len(panels))
  )
  for ax, (title, by_round) in zip(axes[:, 0], panels):
    data, names, colors = [], [], []
    for r, c in by_round.items():
      for x, tag, color in ((c.selected, "s", "tab:green"), (c.unselected, "u", "tab:gray")):
        data.append(100 * np.asarray(x))
        names.append(f"r{r}{tag}")
        colors.append(color)
    box = ax.boxplot(data, patch_artist=True, showfliers=True)
    ax.set_xticks(range(1, len(names) + 1), names, fontsize=8)
    for patch, color in zip(box["boxes"], colors):
      patch.set_facecolor(color)
      patch.set_alpha(0.5)
    ax.set_ylabel("stage-1 Dice (%)")
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(title, fontsize=9)
  fig.suptitle(
    "Unlabeled cases' Dice: selected (s) for pseudo-labels vs unselected (u), per round",
    fontsize=9,
  )
  save_figure(fig, path)


@dataclasses.dataclass(frozen=True)
class QuerySlice:
  method: str
  seed: int
  round: int
  case_id: str
  image: np.ndarray  # [H, W] float32
  label: np.ndarray | None  # [H, W] int; None when the case had no ground truth on disk
  pred: np.ndarray  # [H, W] int


def _read_npz(path: Path, method: str, seed: int, r: int, problems: list[str]) -> list[QuerySlice]:
  try:
    with np.load(path) as z:
      arrays = {k: z[k] for k in z.files}
  except Exception as e:  # a corrupt montage input must not sink the whole report
    problems.append(f"{path}: unreadable ({type(e).__name__}: {e})")
    return []
  ids = sorted({k.rsplit("/", 1)[0] for k in arrays if "/" in k})
  out = []
  for cid in ids:
    image, label, pred = (arrays.get(f"{cid}/{n}") for n in ("image", "label", "pred"))
    parts = [p for p in (image, label, pred) if p is not None]
    if image is None or pred is None or any(p.ndim != 2 or p.shape != image.shape for p in parts):
      problems.append(f"{path}: case {cid!r} lacks 2-D image/pred (and label) of one shape")
      continue
    out.append(QuerySlice(method, seed, r, cid, image, label, pred))
  return out


def collect_query_slices(
  runs: Sequence[RunResult], max_per_method: int = 6
) -> tuple[list[QuerySlice], list[str]]:
  """Queried slices of the lowest seed of each method that has any (rounds in order)."""
  problems: list[str] = []
  slices: list[QuerySlice] = []
  for run in sorted(
    (r for r in runs if not r.bound), key=lambda r: (method_sort_key(r.method), r.seed)
  ):
    if any(q.method == run.method for q in slices):
      continue
    for path in sorted(run.workdir.glob("round_*/query_slices.npz")):
      m = re.fullmatch(r"round_(\d+)", path.parent.name)
      if m is None:
        continue
      got = _read_npz(path, run.method, run.seed, int(m.group(1)), problems)
      room = max_per_method - sum(q.method == run.method for q in slices)
      slices += got[:room]
  return slices, problems


def _overlay(ax, image: np.ndarray, mask: np.ndarray | None, title: str) -> None:
  """image [H, W] in gray (1-99 percentile window), mask [H, W] classes filled + outlined."""
  img = image.astype(np.float32)
  lo, hi = np.percentile(img, [1, 99]) if img.size else (0.0, 1.0)
  ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
  if mask is not None:
    ax.imshow(
      np.ma.masked_equal(mask.astype(int), 0) % 10,
      cmap=CLASS_CMAP,
      vmin=0,
      vmax=9,
      alpha=0.45,
      interpolation="nearest",
    )
    for c in np.unique(mask):
      if c > 0:
        ax.contour(
          (mask == c).astype(float), levels=[0.5], linewidths=0.8, colors=[CLASS_CMAP(int(c) % 10)]
        )
  else:
    ax.text(
      0.5,
      0.5,
      "no ground truth",
      ha="center",
      va="center",
      fontsize=7,
      color="w",
      transform=ax.transAxes,
    )
  ax.set_title(title, fontsize=7)
  ax.set_xticks([])
  ax.set_yticks([])


def plot_query_montage(slices: Sequence[QuerySlice], path: Path) -> None:
  """Rows: methods; per queried case (round order) a ground-truth and a prediction panel."""
  methods = list(dict.fromkeys(q.method for q in slices))
  ncase = max(sum(q.method == m for q in slices) for m in methods)
  fig, axes = plt.subplots(
    len(methods),
    2 * ncase,
    squeeze=False,
    layout="constrained",
    figsize=(1.5 * 2 * ncase + 0.8, 1.75 * len(methods) + 0.4),
  )
  for i, m in enumerate(methods):
    row = [q for q in slices if q.method == m]
    for j in range(ncase):
      gt_ax, pred_ax = axes[i][2 * j], axes[i][2 * j + 1]
      if j < len(row):
        q = row[j]
        _overlay(gt_ax, q.image, q.label, f"r={q.round} {q.case_id}\nground truth")
        _overlay(pred_ax, q.image, q.pred, f"r={q.round} {q.case_id}\nprediction")
      else:
        gt_ax.axis("off")
        pred_ax.axis("off")
    axes[i][0].set_ylabel(f"{m}\nseed {row[0].seed}", fontsize=9)
  fig.suptitle(
    "Queried cases, central axial slice: ground truth, and the prediction of the "
    "model after that round (colours = classes)",
    fontsize=9,
  )
  save_figure(fig, path)


def plot_probe(res: dict, path: Path) -> None:
  """One panel per score: each candidate's score against its true gain (Dice × 100), the
  random pick's expected gain as a dashed line, ρ in the title (`assft_jax.probe`)."""
  rows = res["scores"]
  cols = 5
  fig, axes = plt.subplots(
    (len(rows) + cols - 1) // cols,
    cols,
    figsize=(3.2 * cols, 2.9 * ((len(rows) + cols - 1) // cols)),
  )
  axes = np.atleast_1d(axes).ravel()
  cands = res["candidates"]
  gain = np.array([100 * res["gains"][c] for c in cands])
  for ax, r in zip(axes, rows):
    x = np.array([res["score_values"][r["score"]][c] for c in cands])
    ax.scatter(x, gain, s=14, alpha=0.8)
    ax.axhline(100 * res["random_gain"], color="grey", linestyle="--", linewidth=1)
    ax.set_title(f"{r['score']} (ρ {r['rho']:+.2f})", fontsize=9)
    ax.set_xlabel(f"score (queries its {r['queried_end']} end)", fontsize=8)
    ax.tick_params(labelsize=7)
  for ax in axes[: len(rows) : cols]:
    ax.set_ylabel("true gain (Dice × 100)", fontsize=8)
  for ax in axes[len(rows) :]:
    ax.axis("off")
  fig.tight_layout()
  save_figure(fig, path)
