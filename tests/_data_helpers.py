"""Shared helpers of the data tests (no tests here): tiny NIfTI files."""

import nibabel as nib
import numpy as np


def write_nii(path, arr, affine=None):
  """Saves `arr` as NIfTI at `path` (folders made), identity affine by default."""
  path.parent.mkdir(parents=True, exist_ok=True)
  nib.save(nib.Nifti1Image(np.asarray(arr), np.eye(4) if affine is None else affine), str(path))
