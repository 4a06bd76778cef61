"""Built-in domain-shift benchmark: abdomen-like phantoms written in the MSD layout.

    python -m assft_jax.data.phantom --out DIR --domain ct|mr --n N --shape D,H,W --seed S

The cases come from `phantom_synth` (anatomy and intensities); this module picks them
(MR "scanners" in shares 60/30/10, plus a hard fraction), writes the NIfTI files with an
SPL affine and dataset.json, with per-case metadata in dataset.json["cases"].
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from assft_jax.atomic import write_json

from .errors import DataError
from .io import atomic_save
from .phantom_synth import CLASSES, MR_SCANNERS, VERSION, CaseSpec, synth_case


def generate(
  out_dir: str | os.PathLike,
  domain: str,
  n: int,
  shape: Sequence[int] = (48, 48, 48),
  seed: int = 0,
  spacing: Sequence[float] | None = None,
  anisotropic: bool = False,
  hard_fraction: float = 0.15,
  overwrite: bool = False,
  scanner_shares: Sequence[float] | None = None,
) -> Path:
  """Write n cases in MSD layout into out_dir and return it. Same seed -> same bytes.

  domain "ct" (source) or "mr" (target). spacing defaults to 1.5 mm isotropic, or
  (4.0, 1.5, 1.5) with anisotropic=True (MR; slices are also blurred along D).
  If out_dir already holds a complete phantom with the same settings, nothing is
  rewritten (file mtimes, hence preprocessing caches, stay valid) unless overwrite.
  scanner_shares: the MR scanners' shares (A, B, C); default MR_SCANNERS' 60/30/10 %.
  """
  if domain not in ("ct", "mr"):
    raise DataError(f"--domain: expected ct or mr, got '{domain}'")
  shape = tuple(int(s) for s in shape)
  if len(shape) != 3 or min(shape) < 8:
    raise DataError(f"--shape: expected D,H,W each >= 8, got {shape}")
  if n < 1:
    raise DataError(f"--n: expected >= 1, got {n}")
  spacing = tuple(spacing) if spacing else ((4.0, 1.5, 1.5) if anisotropic else (1.5, 1.5, 1.5))
  out = Path(out_dir)
  settings = {
    "domain": domain,
    "n": n,
    "shape": list(shape),
    "seed": seed,
    "spacing": list(spacing),
    "anisotropic": anisotropic,
    "hard_fraction": hard_fraction,
    "version": VERSION,
  }
  if scanner_shares is not None:  # absent at the default: caches made before stay valid
    settings["scanner_shares"] = [float(x) for x in scanner_shares]
  if not overwrite and _complete(out, settings):
    return out
  for sub in ("imagesTr", "labelsTr"):
    (out / sub).mkdir(parents=True, exist_ok=True)
  specs = assign_cases(domain, n, seed, hard_fraction, scanner_shares)
  affine = spl_affine(spacing, shape)
  training, cases = [], {}
  for i, spec in enumerate(specs):
    rng = np.random.default_rng([seed, 0 if domain == "ct" else 1, i])
    image, label, info = synth_case(rng, domain, shape, spec, anisotropic)
    dtype = np.int16 if domain == "ct" else np.float32
    img = nib.Nifti1Image(image.astype(dtype), affine)
    lab = nib.Nifti1Image(label.astype(np.uint8), affine)
    for im in (img, lab):
      im.set_qform(affine, code=1)
      im.set_sform(affine, code=1)
    atomic_save(img, out / "imagesTr" / f"{spec.id}.nii.gz")
    atomic_save(lab, out / "labelsTr" / f"{spec.id}.nii.gz")
    training.append(
      {"image": f"./imagesTr/{spec.id}.nii.gz", "label": f"./labelsTr/{spec.id}.nii.gz"}
    )
    cases[spec.id] = {"scanner": spec.scanner, "hard": spec.hard, **info}
  meta = {
    "name": f"assft-phantom-{domain}",
    "description": "assft_jax.data.phantom synthetic abdomen benchmark",
    "modality": {"0": "CT" if domain == "ct" else "MR"},
    "labels": {str(i): c for i, c in enumerate(CLASSES)},
    "numTraining": n,
    "training": training,
    "test": [],
    "generator": settings,
    "cases": cases,
  }
  write_json(out / "dataset.json", meta)
  return out


def _complete(out: Path, settings: dict) -> bool:
  try:
    meta = json.loads((out / "dataset.json").read_text())
  except (OSError, json.JSONDecodeError):
    return False
  return meta.get("generator") == settings and all(
    (out / e[k]).exists() for e in meta.get("training", []) for k in ("image", "label")
  )


def assign_cases(
  domain: str, n: int, seed: int, hard_fraction: float, shares: Sequence[float] | None = None
) -> list[CaseSpec]:
  """Scanner labels in exact shares (rounded; default MR_SCANNERS') and a hard subset,
  shuffled by seed."""
  rng = np.random.default_rng([seed, 7, 0 if domain == "ct" else 1])
  if domain == "ct":
    scanners = ["ct"] * n
  else:
    names = list(MR_SCANNERS)
    shares = [MR_SCANNERS[s][0] for s in names] if shares is None else list(shares)
    if len(shares) != len(names) or min(shares) < 0 or abs(sum(shares) - 1) > 1e-6:
      raise DataError(f"scanner shares {shares}: want {len(names)} values >= 0 summing to 1")
    counts = [int(round(f * n)) for f in shares]
    counts[0] += n - sum(counts)
    scanners = list(rng.permutation(np.repeat(names, counts)))
  hard = np.zeros(n, bool)
  hard[rng.permutation(n)[: int(round(hard_fraction * n))]] = True
  return [
    CaseSpec(f"{domain}_{i:03d}", str(s), bool(h)) for i, (s, h) in enumerate(zip(scanners, hard))
  ]


def spl_affine(spacing, shape) -> np.ndarray:
  """Axis 0 -> superior, 1 -> posterior, 2 -> left (RAS world), centred at 0."""
  a = np.zeros((4, 4))
  a[2, 0], a[1, 1], a[0, 2], a[3, 3] = spacing[0], -spacing[1], -spacing[2], 1.0
  a[:3, 3] = -a[:3, :3] @ (np.array(shape) - 1) / 2
  return a


def case_metadata(data_dir: str | os.PathLike) -> dict[str, dict]:
  """id -> {"scanner", "hard", "absent", "lesions", "missing"} of a phantom dataset
  (empty for any other dataset): for analysing which cases a strategy picked."""
  try:
    return dict(json.loads((Path(data_dir) / "dataset.json").read_text()).get("cases", {}))
  except (OSError, json.JSONDecodeError):
    return {}


def main(argv: Sequence[str] | None = None) -> int:
  ap = argparse.ArgumentParser(
    prog="python -m assft_jax.data.phantom", description=__doc__.split("\n")[0]
  )
  ap.add_argument("--out", required=True)
  ap.add_argument("--domain", choices=("ct", "mr"), required=True)
  ap.add_argument("--n", type=int, default=20)
  ap.add_argument("--shape", type=_shape, default=(48, 48, 48), help="D,H,W")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--anisotropic", action="store_true")
  ap.add_argument("--hard_fraction", type=float, default=0.15)
  ap.add_argument("--overwrite", action="store_true", help="rewrite even if up to date")
  args = ap.parse_args(argv)
  try:
    out = generate(
      args.out,
      args.domain,
      args.n,
      args.shape,
      args.seed,
      anisotropic=args.anisotropic,
      hard_fraction=args.hard_fraction,
      overwrite=args.overwrite,
    )
  except DataError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {args.n} {args.domain} cases to {out}")
  return 0


def _shape(text: str) -> tuple[int, ...]:
  """--shape D,H,W; argparse names the flag when this raises."""
  try:
    return tuple(int(s) for s in text.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected D,H,W integers, got {text!r}") from None


if __name__ == "__main__":
  sys.exit(main())
