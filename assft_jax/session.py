"""What one run holds while it goes: data, split, model, mesh and compiled steps.

`loop.py` speaks only to a Session (label, fit, score, predict, evaluate, save), so
Algorithm 1 reads as the paper writes it; this file is the glue onto the rooms
(data, models, engine) and the place where their settings meet the RunConfig.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from assft_jax import config as config_lib
from assft_jax import data as data_lib
from assft_jax import engine, models, pretrain
from assft_jax import oracle as oracle_lib
from assft_jax import workdir as wd_lib
from assft_jax.pool import Pool

log = logging.getLogger("assft_jax.session")

_STAGES = {"init": 0, "s1": 1, "s3": 3, "upper": 4}


@dataclasses.dataclass
class Session:
  cfg: config_lib.RunConfig
  workdir: Path
  dataset: data_lib.Dataset
  volumes: Mapping[str, data_lib.Volume]
  split: dict
  module: Any
  variables0: Any
  mesh: Any
  _steps: dict = dataclasses.field(default_factory=dict)

  # ------------------------------------------------------------------ construction

  @classmethod
  def open(cls, cfg: config_lib.RunConfig, workdir: Path, check=None) -> Session:
    """Data first (cheap, and where most user errors show), then `check(split)`, then
    the model (which may pre-train the source encoder)."""
    dataset = load_dataset(cfg)
    volumes = data_lib.prepare(dataset, _pcfg(cfg), cfg.cache / "preprocessed")
    split = _split(cfg, workdir, dataset)
    mesh = _mesh(cfg)
    if check is not None:
      check(split)
    module, variables0 = initial_model(cfg, len(dataset.class_names))
    return cls(
      cfg=cfg,
      workdir=workdir,
      dataset=dataset,
      volumes=volumes,
      split=split,
      module=module,
      variables0=variables0,
      mesh=mesh,
    )

  @property
  def class_names(self) -> tuple[str, ...]:
    return self.dataset.class_names

  @property
  def num_classes(self) -> int:
    return len(self.dataset.class_names)

  @property
  def _sw(self) -> dict:
    return dict(roi=self.cfg.train.patch, sw_batch_size=self.cfg.train.sw_batch_size)

  # ---------------------------------------------------------------------- labels

  def label(self, ids: Sequence[str], r: int) -> dict[str, np.ndarray]:
    """The oracle: ground truth, or the annotators' files (AnnotationPending if absent)."""
    ids = list(ids)
    if self.cfg.al.oracle == "ground_truth":
      return {i: self._gt(i) for i in ids}
    rd = wd_lib.round_dir(self.workdir, r)
    rows = oracle_lib.manifest_rows(
      ids, {c.id: c.image for c in self.dataset.cases}, Path(self.cfg.al.labels_dir)
    )
    manifest = rd / "to_annotate.csv"
    if not manifest.exists():
      oracle_lib.write_manifest(manifest, rows)
      if self.cfg.al.annotation_dir:
        oracle_lib.link_for_annotators(rows, Path(self.cfg.al.annotation_dir))
    return oracle_lib.collect_labels(ids, rows, self._annotated_label, manifest, r)

  def known_labels(self, pool: Pool) -> dict[str, np.ndarray]:
    """Labels of the cases labeled in earlier rounds (already checked then)."""
    if self.cfg.al.oracle == "ground_truth":
      return {i: self._gt(i) for i in pool.labeled}
    return {
      i: self._annotated_label(i, Path(self.cfg.al.labels_dir) / f"{i}{oracle_lib.LABEL_SUFFIX}")
      for i in pool.labeled
    }

  def _gt(self, cid: str) -> np.ndarray:
    label = self.volumes[cid].label
    if label is None:
      raise data_lib.DataError([f"{cid}: no ground-truth label; use --oracle=manifest"])
    return label

  def _annotated_label(self, cid: str, path: Path) -> np.ndarray:
    """An annotator's file, preprocessed onto the case's grid (validated on the way)."""
    case = dataclasses.replace(self.dataset.case(cid), label=Path(path))
    ds = dataclasses.replace(self.dataset, cases=(case,))
    try:
      vol = data_lib.prepare(ds, _pcfg(self.cfg), self.cfg.cache / "annotated")[cid]
    except data_lib.DataError as e:
      raise ValueError(str(e)) from None
    return np.asarray(vol.label)

  # -------------------------------------------------------------------- training

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
    """Fine-tunes from `variables` on labeled ∪ pseudo cases; returns new variables."""
    tr = self.cfg.train
    targets = {**labels, **pseudo}
    ids = list(targets)
    spe = tr.steps_per_epoch or math.ceil(len(ids) / tr.batch_size)
    n_steps = epochs * spe
    tx, step = self._step_for(n_steps)
    # create_state copies: the step donates its state, and the caller's variables (e.g.
    # F(0), which E(0) embeddings come from) must stay valid.
    state = engine.create_state(self.module, variables, tx)
    seed = int(np.random.SeedSequence([self.cfg.seed, round_, _STAGES[stage]]).generate_state(1)[0])
    loader = data_lib.make_loader(
      self.volumes, ids, tr.patch, tr.batch_size, seed, pseudo=targets, num_batches=n_steps
    )
    rng = jax.random.PRNGKey(seed)
    rd = wd_lib.round_dir(self.workdir, round_)
    state, _ = engine.fine_tune(
      state,
      step,
      loader,
      epochs,
      spe,
      rng,
      round_=round_,
      log_path=rd / f"train_{stage}.jsonl",
      desc=f"r{round_} {stage}",
      progress=_progress(),
    )
    return engine.variables_of(state)

  def _step_for(self, n_steps: int):
    """One compiled step per schedule length: rounds of equal length never recompile."""
    if n_steps not in self._steps:
      tr = self.cfg.train
      tx = engine.make_optimizer(tr.lr, n_steps, tr.weight_decay, clip_norm=tr.clip_norm)
      aug = data_lib.AugmentConfig() if tr.augment else None
      step = engine.make_train_step(
        self.module, tx, self.mesh, self.num_classes, precision=tr.precision, augment_cfg=aug
      )
      self._steps[n_steps] = (tx, step)
    return self._steps[n_steps]

  # --------------------------------------------------------------------- scoring

  def score(self, variables, ids: Sequence[str], r: int, R: int) -> dict:
    return engine.score_pass(
      self.module,
      variables,
      self.volumes,
      list(ids),
      r=r,
      R=R,
      emb0_variables=self.variables0,
      emb0_cache=self.cfg.cache / "emb0",
      **self._sw,
    )

  def embed0(self, ids: Sequence[str]) -> np.ndarray:
    """E(0) embeddings [N, F] of the pre-trained encoder (cached across rounds)."""
    return engine.embed0(
      self.module,
      self.variables0,
      self.volumes,
      list(ids),
      cache=self.cfg.cache / "emb0",
      **self._sw,
    )

  def predict(self, variables, ids: Sequence[str]) -> dict[str, np.ndarray]:
    return engine.predict_labels(self.module, variables, self.volumes, list(ids), **self._sw)

  def evaluate(self, variables) -> dict:
    ids = list(self.split["test"])
    if not ids:
      return {"dice_mean": None, "dice_sd": None, "dice_per_case": {}, "dice_per_class": {}}
    res = engine.evaluate(
      self.module,
      variables,
      self.volumes,
      ids,
      num_classes=self.num_classes,
      class_names=self.class_names,
      **self._sw,
    )
    return {
      "dice_mean": _num(res["mean"]),
      "dice_sd": _num(res["sd"]),
      "dice_per_case": {c: v["mean"] for c, v in res["per_case"].items()},
      "dice_per_class": res["per_class"],
    }

  # ------------------------------------------------------------------ persistence

  def save_round_model(self, r: int, variables) -> None:
    models.save_pretrained(
      wd_lib.round_dir(self.workdir, r) / "model",
      models.model_config(self.module),
      jax.device_get(variables),
    )

  def load_round_model(self, r: int):
    _, variables = models.load_pretrained(wd_lib.round_dir(self.workdir, r) / "model")
    return variables

  def save_query_slices(self, path: Path, variables, ids: Sequence[str]) -> None:
    """Central axial slices (axis 0: slices in SPL/LPS-like order) for the report."""
    ids = list(ids)
    preds = self.predict(variables, ids) if ids else {}
    arrays = {}
    for cid in ids:
      vol = self.volumes[cid]
      mid = vol.image.shape[0] // 2
      arrays[f"{cid}/image"] = np.asarray(vol.image[mid, ..., 0], np.float32)
      if vol.label is not None:
        arrays[f"{cid}/label"] = np.asarray(vol.label[mid], np.int16)
      arrays[f"{cid}/pred"] = np.asarray(preds[cid][mid], np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


# ----------------------------------------------------------------------- helpers


def _pcfg(cfg: config_lib.RunConfig) -> data_lib.PreprocessConfig:
  d = cfg.data
  return data_lib.PreprocessConfig(
    pipeline=d.pipeline, crop_size=d.crop_size, spacing=d.spacing, orientation=d.orientation
  )


def load_dataset(cfg: config_lib.RunConfig) -> data_lib.Dataset:
  """The user's dataset, or the built-in phantom target domain generated into the cache."""
  d = cfg.data
  root = (
    Path(d.data_dir)
    if d.data_dir
    else pretrain.ensure_phantom(
      cfg.cache, d.phantom_domain, d.phantom_n, d.phantom_shape, d.phantom_seed
    )
  )
  return data_lib.load_index(
    root,
    d.layout,
    drop_labels=d.drop_labels,
    require_labels=cfg.al.oracle == "ground_truth",
    include=d.include,
    splits=d.splits,
  )


def initial_model(cfg: config_lib.RunConfig, num_classes: int):
  """F(0) = [E(p); D(0)]: the pre-trained encoder and a fresh He-initialised decoder."""
  src = cfg.model.pretrained or pretrain.ensure_source_encoder(cfg)
  module, variables = models.load_pretrained(
    src, out_channels=num_classes, rng=jax.random.PRNGKey(cfg.seed), conv_impl=cfg.model.conv_impl
  )
  return module, variables


def _split(cfg, workdir: Path, dataset) -> dict:
  """Test split by seed (never queried), stored once so a resume cannot redraw it."""
  path = workdir / "split.json"
  saved = wd_lib.read_json(path)
  if saved is not None:
    return saved
  labeled = [c.id for c in dataset.cases if c.label is not None]
  rng = np.random.default_rng([cfg.seed, 7])
  n_test = max(1, round(cfg.data.test_fraction * len(dataset.cases))) if labeled else 0
  test = sorted(rng.permutation(sorted(labeled))[:n_test].tolist())
  pool = [c.id for c in dataset.cases if c.id not in set(test)]
  split = {"test": test, "pool": pool}
  config_lib.write_json_atomic(path, split)
  return split


def _mesh(cfg):
  devs = jax.local_devices()
  n = cfg.train.devices or len(devs)
  if n > len(devs):
    raise config_lib.ConfigError(f"--devices={n}: only {len(devs)} local device(s)")
  if cfg.train.batch_size % n:
    raise config_lib.ConfigError(
      f"--batch_size={cfg.train.batch_size} must divide by the "
      f"{n} device(s) of the data-parallel mesh (--devices)"
    )
  return engine.make_mesh(devs[:n])


def _num(v) -> float | None:
  return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _progress() -> bool:
  import sys

  return sys.stderr.isatty()
