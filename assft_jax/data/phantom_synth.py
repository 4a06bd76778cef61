"""One phantom case: anatomy, tissue map, labels and intensities (no file IO).

Anatomy (normalised coordinates, array axes D=superior, H=posterior, W=left):
an elliptic body filling most of the field of view, with subcutaneous and visceral fat,
soft tissue, a skeleton (vertebral body, posterior elements, ribs, iliac wings), lung
bases and bowel gas, and 7 labelled organs (liver, spleen, both kidneys, stomach, aorta,
and a thin pancreas whose CT value sits next to soft tissue: the small, hard class).
The unlabelled structures put > 5 % of the voxels above and > 5 % below every organ in
each domain and scanner, as in real abdominal scans, so the paper's 5th-95th percentile
clip keeps the organs' contrast. Each case draws a pose (rotation, scale,
shift), a smooth elastic deformation, per-organ size/position jitter, occasional absent
organs and lesions. The CT source has HU-like values and fine noise; the MR target
has a different organ ordering, a smooth bias field and Rician noise, and comes from
one of three "scanners" (contrast / noise / field of view); hard cases have low
contrast and small organs.

Every draw comes from the caller's numpy Generator in a fixed order: changing the order,
a constant or a formula changes the data, so bump VERSION (it keys the caches).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

VERSION = 2  # bump when the generator's output changes
CLASSES = (
  "background",
  "liver",
  "spleen",
  "kidney_left",
  "kidney_right",
  "stomach",
  "aorta",
  "pancreas",
)
# organ: (centre z, y, x), radii (z, y, x); x > 0 is the patient's left, y > 0 posterior
ANATOMY = {
  "liver": ((0.35, -0.05, -0.36), (0.42, 0.45, 0.4)),
  "stomach": ((0.35, -0.28, 0.32), (0.24, 0.22, 0.24)),
  "spleen": ((0.4, 0.3, 0.56), (0.25, 0.18, 0.15)),
  "kidney_left": ((-0.05, 0.4, 0.38), (0.26, 0.15, 0.13)),
  "kidney_right": ((-0.12, 0.4, -0.38), (0.26, 0.15, 0.13)),
  "pancreas": ((0.06, 0.1, 0.08), (0.09, 0.08, 0.3)),
}
AORTA = ((0.3, 0.03), 0.08)  # (y, x) centre, radius: a tube along z
SPINE = ((0.56, 0.0), 0.17)  # vertebral body (marrow), a tube along z
LUNGS = ((1.08, 0.2, 0.5), (0.36, 0.42, 0.36))  # z, y, |x| centre and radii: lung bases
PELVIS = ((-0.95, 0.42, 0.5), (0.5, 0.12, 0.34))  # iliac wings, x mirrored
HARD_SCALE = 1.12  # hard cases: anatomy coordinates stretched, so organs look smaller
ABSENT_P = {"spleen": 0.06, "kidney_left": 0.06, "kidney_right": 0.06, "pancreas": 0.06}
# "bone": marrow-filled (vertebral body, pelvis); "cortex": compact bone (posterior
# elements, ribs). Organ tissues must come after "lesion" (see _add_lesion).
TISSUES = ("air", "lung", "fat", "soft", "bone", "cortex", "lesion") + CLASSES[1:]


def _means(*values: float) -> dict[str, float]:
  """Mean intensity per tissue, given in TISSUES order (the dict keeps that order,
  which fixes the order of the per-tissue random draws in `render`)."""
  return dict(zip(TISSUES, values, strict=True))


# Mean intensity per tissue; CT in HU, MR in arbitrary units. The MR orderings differ
# from CT (CT: aorta > kidney > liver > spleen > pancreas > stomach).
# T1-like MR: fat and fatty marrow bright, compact bone, lung and gas dark.
# Columns: air, lung, fat, soft, bone, cortex, lesion, liver, spleen, kidney_left,
# kidney_right, stomach, aorta, pancreas.
CT_MEANS = _means(-1000, -850, -100, 40, 450, 900, 20, 60, 50, 150, 150, 10, 200, 48)
MR_MEANS = {
  "A": _means(0, 30, 1000, 300, 760, 60, 300, 520, 380, 430, 430, 160, 90, 620),
  "B": _means(0, 25, 1250, 260, 950, 50, 700, 280, 560, 650, 650, 780, 60, 420),
  "C": _means(0, 30, 1000, 380, 740, 40, 380, 460, 420, 520, 520, 260, 200, 520),
}
MR_SCANNERS = {  # name: (share, means, noise sigma, bias amplitude, field of view)
  "A": (0.6, MR_MEANS["A"], 18.0, 0.2, 1.0),
  "B": (0.3, MR_MEANS["B"], 35.0, 0.3, 1.0),
  "C": (0.1, MR_MEANS["C"], 55.0, 0.4, 0.78),
}


@dataclass(frozen=True)
class CaseSpec:
  """id; scanner: "ct" or a key of MR_SCANNERS; hard: low contrast, small organs."""

  id: str
  scanner: str
  hard: bool


def smooth_field(rng, shape, n_ctrl: int, amp: float) -> np.ndarray:
  """Low-frequency random field: n_ctrl^3 Gaussian control values blended by a
  separable Gaussian basis (width = control spacing), rescaled so the voxel SD is
  about `amp`. Separable, so cheap at any size."""
  coarse = rng.normal(0.0, amp, (n_ctrl,) * 3)
  centres = np.linspace(-1, 1, n_ctrl)
  width = 2.0 / max(n_ctrl - 1, 1)
  basis, gain = [], 1.0
  for n in shape:
    w = np.exp(-0.5 * ((np.linspace(-1, 1, n)[:, None] - centres[None]) / width) ** 2)
    w = w / w.sum(axis=1, keepdims=True)
    gain *= float((w**2).sum(axis=1).mean())  # variance kept by the blending
    basis.append(w)
  field = np.einsum("ai,bj,ck,ijk->abc", *basis, coarse, optimize=True) / np.sqrt(gain)
  return field.astype(np.float32)


def warped_grid(rng, shape, fov: float, hard: bool) -> np.ndarray:
  """[3, D, H, W] anatomy coordinates of each voxel: pose + elastic deformation."""
  axes = [np.linspace(-1, 1, s, dtype=np.float32) for s in shape]
  p = np.stack(np.meshgrid(*axes, indexing="ij")).reshape(3, -1) * fov
  rot = Rotation.from_euler("xyz", rng.uniform(-12, 12, 3), degrees=True).as_matrix()
  scale = rng.uniform(0.9, 1.1) * (HARD_SCALE if hard else 1.0)  # hard: organs look smaller
  shift = rng.uniform(-0.06, 0.06, 3)
  if fov < 1:  # reduced field of view: a random part of the abdomen is visible
    shift = shift + rng.uniform(-(1 - fov), 1 - fov, 3) * np.array([1.0, 0.3, 0.3])
  q = (rot @ p) * scale + shift[:, None]
  q = q.reshape(3, *shape)
  for k in range(3):
    q[k] += smooth_field(rng, shape, 4, 0.08)
  return q.astype(np.float32)


def paint(rng, q: np.ndarray, hard: bool) -> tuple[np.ndarray, np.ndarray, dict]:
  """Tissue-index map [D,H,W] (into TISSUES) and label map, plus case info."""
  z, y, x = q
  T = TISSUES.index
  tissue = np.zeros(q.shape[1:], np.uint8)
  ry, rx, t = rng.uniform(0.84, 0.92), rng.uniform(0.92, 0.99), rng.uniform(0.08, 0.14)
  if hard:  # warped_grid shrank the anatomy to make organs small; keep the body's size
    ry, rx = ry * HARD_SCALE, rx * HARD_SCALE
  r_body = (y / ry) ** 2 + (x / rx) ** 2
  inner = r_body < (1 - t) ** 2
  tissue[r_body < 1] = T("fat")
  tissue[inner] = T("soft")
  # mesenteric/omental fat: smooth patches in a fifth of the soft tissue
  field = smooth_field(rng, tissue.shape, 5, 1.0)
  if inner.any():
    tissue[inner & (field > np.quantile(field[inner], 0.8))] = T("fat")
  (cz, cy, cx), (az, ay, ax) = LUNGS
  lung = ((z - cz) / az) ** 2 + ((y - cy) / ay) ** 2 + ((np.abs(x) - cx) / ax) ** 2 < 1
  tissue[lung & inner] = T("lung")
  absent, lesions = [], 0
  for organ, (c, r) in ANATOMY.items():
    if rng.random() < ABSENT_P.get(organ, 0.0):
      absent.append(organ)
      continue
    c = np.array(c) + rng.uniform(-0.05, 0.05, 3)
    r = np.array(r) * rng.uniform(0.85, 1.15, 3) * (0.8 if hard else 1.0)
    if organ == "pancreas" and hard:
      r = r * np.array([0.8, 0.7, 1.0])
    if organ.startswith("kidney"):  # perirenal fat capsule
      tissue[(_ellipsoid(q, c, r * 1.4) < 1) & inner] = T("fat")
    tissue[(_ellipsoid(q, c, r) < 1) & (r_body < 1)] = T(organ)
    if organ in ("liver", "kidney_left", "kidney_right") and rng.random() < 0.25:
      lesions += _add_lesion(rng, tissue, q, c, r)
  _paint_gas(rng, tissue, q, inner)
  cy, cx = AORTA[0][0] + rng.uniform(-0.03, 0.03), AORTA[0][1] + rng.uniform(-0.03, 0.03)
  rad = AORTA[1] * rng.uniform(0.85, 1.15) * (0.8 if hard else 1.0)
  tissue[((y - cy) ** 2 + (x - cx) ** 2 < rad**2) & (r_body < 1)] = T("aorta")
  _paint_skeleton(rng, tissue, q, r_body, t)
  organ_codes = np.array([T(c) if c != "background" else -1 for c in CLASSES])
  lut = np.zeros(len(TISSUES), np.uint8)
  for k, code in enumerate(organ_codes[1:], start=1):
    lut[code] = k
  label = lut[tissue]
  lesion_mask = tissue == T("lesion")
  label[lesion_mask] = _lesion_owner(label, lesion_mask)  # lesions belong to their organ
  return tissue, label, {"absent": absent, "lesions": lesions}


def _ellipsoid(q, c, r) -> np.ndarray:
  """Normalised squared radius [D,H,W] of each voxel for an axis-aligned ellipsoid."""
  return sum(((q[k] - c[k]) / r[k]) ** 2 for k in range(3))


def _paint_gas(rng, tissue, q, inner) -> None:
  """A few bowel-gas pockets in the lower, anterior abdomen (never inside an organ)."""
  free = inner & np.isin(tissue, [TISSUES.index("soft"), TISSUES.index("fat")])
  for _ in range(int(rng.integers(3, 7))):
    c = rng.uniform((-0.8, -0.6, -0.6), (0.1, 0.05, 0.6))
    r = rng.uniform(0.07, 0.13) * rng.uniform(0.7, 1.3, 3)
    tissue[(_ellipsoid(q, c, r) < 1) & free] = TISSUES.index("air")


def _paint_skeleton(rng, tissue, q, r_body, t) -> None:
  """Vertebral body and iliac wings (marrow "bone"); spinous and transverse processes
  and ribs (compact "cortex"). Painted last: organs lie inside the bony cage."""
  z, y, x = q
  body = r_body < 1
  (cy, cx), rad = SPINE
  cy, cx = cy + rng.uniform(-0.03, 0.03), cx + rng.uniform(-0.03, 0.03)
  rad = rad * rng.uniform(0.9, 1.1)
  tissue[((y - cy) ** 2 + (x - cx) ** 2 < rad**2) & body] = TISSUES.index("bone")
  cortex = ((y - cy - rad - 0.07) / 0.1) ** 2 + ((x - cx) / 0.045) ** 2 < 1  # spinous
  cortex |= ((y - cy - 0.5 * rad) / 0.045) ** 2 + ((np.abs(x - cx) - rad - 0.07) / 0.1) ** 2 < 1
  # ribs: a band just inside the subcutaneous fat, above the costal margin, in
  # oblique stripes along z, open at the anterior midline
  ring = np.sqrt(r_body)
  band = (ring > 1 - t - rng.uniform(0.09, 0.11)) & (ring < 1 - t - 0.01)
  stripes = np.sin(2 * np.pi * (z + 0.35 * y) / 0.24 + rng.uniform(0, 2 * np.pi)) > -0.35
  open_front = (y < -0.2) & (np.abs(x) < 0.35)
  cortex |= band & stripes & ~open_front & (z > rng.uniform(-0.5, -0.3))
  tissue[cortex & body] = TISSUES.index("cortex")
  (pz, py, px), r = PELVIS
  for side in (-1.0, 1.0):  # wings flare laterally and curve backwards
    yy = y - 0.3 * (np.abs(x) - px)
    wing = _ellipsoid(np.stack([z, yy, x]), (pz, py, side * px), r) < 1
    tissue[wing & body] = TISSUES.index("bone")


def _add_lesion(rng, tissue, q, c, r) -> int:
  k = int(rng.integers(1, 3))
  for _ in range(k):
    lc = c + rng.uniform(-0.4, 0.4, 3) * r
    lr = rng.uniform(0.04, 0.08)
    m = ((q - lc[:, None, None, None]) ** 2).sum(0) < lr**2
    tissue[m & (tissue > TISSUES.index("lesion"))] = TISSUES.index("lesion")
  return k


def _lesion_owner(label, mask):
  """Label of lesion voxels: the nearest organ voxel's class (lesions sit inside)."""
  if not mask.any():
    return label[mask]
  idx = ndimage.distance_transform_edt(label == 0, return_distances=False, return_indices=True)
  return label[tuple(i[mask] for i in idx)]


def render(rng, tissue, domain: str, spec: CaseSpec, anisotropic: bool) -> np.ndarray:
  """Intensity image [D, H, W] float32 for the tissue map."""
  if domain == "ct":
    means, sigma, bias_amp = dict(CT_MEANS), rng.uniform(8, 16), 0.0
    means["aorta"] = rng.uniform(150, 280)  # contrast phase varies
  else:
    _, means, sigma, bias_amp, _ = MR_SCANNERS[spec.scanner]
    means = {k: v * rng.uniform(0.93, 1.07) for k, v in means.items()}
  if spec.hard:  # low contrast: organs pulled toward soft tissue, more noise
    for k in CLASSES[1:] + ("lesion",):
      means[k] = means["soft"] + 0.45 * (means[k] - means["soft"])
    sigma *= 1.5
  lut = np.array([means[t] for t in TISSUES], np.float32)
  img = lut[tissue]
  # tissue texture: smooth variation inside the body
  img = img + (tissue > 0) * smooth_field(rng, tissue.shape, 6, 0.15 * sigma).astype(np.float32)
  if anisotropic:
    img = ndimage.gaussian_filter1d(img, 0.8, axis=0)
  if domain == "ct":
    noise = ndimage.gaussian_filter(rng.normal(0, 1, tissue.shape), 0.5)
    img = img + sigma * noise / noise.std()
    return np.clip(np.round(img), -1024, 3071)
  img = img * np.exp(smooth_field(rng, tissue.shape, 3, bias_amp)).astype(np.float32)
  n1, n2 = rng.normal(0, sigma, (2, *tissue.shape))
  return np.sqrt((img + n1) ** 2 + n2**2).astype(np.float32)  # Rician magnitude


def synth_case(rng, domain: str, shape, spec: CaseSpec, anisotropic: bool = False):
  """-> (image [D,H,W], label [D,H,W] uint8, info dict)."""
  fov = MR_SCANNERS[spec.scanner][4] if domain == "mr" else 1.0
  q = warped_grid(rng, shape, fov, spec.hard)
  tissue, label, info = paint(rng, q, spec.hard)
  image = render(rng, tissue, domain, spec, anisotropic)
  present = [CLASSES[k] for k in np.unique(label) if k > 0]
  info["missing"] = [c for c in CLASSES[1:] if c not in present]
  return image, label, info
