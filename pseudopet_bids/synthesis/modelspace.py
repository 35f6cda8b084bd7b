"""The model's view of a subject: template-aligned grid and intensity scaling.

Both training (``train/workflow.py``) and synthesis use these functions, so the two can never
disagree about what the networks see.

Grid
    Every model works on axial slices of a box in MNI152NLin2009aSym space
    (:class:`~pseudopet_bids.models.presets.ModelGrid`; 1 mm and 256 × 256 in-plane for the
    ``paper`` preset). Subject images are brought there with the subject's own T1w → template
    registration (linear interpolation) and predictions go back the same way.
Intensities (float32 throughout, never 8-bit)
    T1w: ``2 · clip(T1w / P99.5, 0, 1) − 1`` where P99.5 is the 99.5th percentile of the T1w
    inside the brain mask; outside the brain mask −1 (the models see skull-stripped brains).
    PET: first normalised to its grey-matter median (``preproc/normalize.py``, GM median = 1),
    then ``2 · clip(PET / PET_MAX, 0, 1) − 1`` with ``PET_MAX = 2.5`` (no FDG tissue of a normal
    brain reaches 2.5 × the cortical median, so nothing real is clipped); −1 outside the brain.
    :func:`unscale_pet` inverts the PET rule. The rule and its constants go into every model
    card (``scaling``) and a model trained with another rule is refused.
"""

from __future__ import annotations

from typing import Any

import nibabel as nib
import numpy as np

from pseudopet_bids.errors import DataError
from pseudopet_bids.models.presets import ModelGrid
from pseudopet_bids.preproc.registration import Registration

PET_MAX = 2.5
MRI_PERCENTILE = 99.5
SCALING: dict[str, Any] = {
    "mri": f"2*clip(T1w/P{MRI_PERCENTILE}(T1w in brain mask), 0, 1) - 1; -1 outside the brain",
    "pet": f"2*clip(PET/{PET_MAX}, 0, 1) - 1 after PET/median(PET in cortical GM); -1 outside",
    "mri_percentile": MRI_PERCENTILE, "pet_max": PET_MAX, "background": -1.0,
    "dtype": "float32",
}


def scale_mri(t1: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """T1w → [−1, 1] by the rule of the module docstring (brain only)."""
    inside = mask > 0
    if not inside.any():
        raise ValueError("scale_mri: empty brain mask")
    hi = float(np.percentile(t1[inside], MRI_PERCENTILE))
    if not hi > 0:
        raise DataError("model input: the T1w is not positive inside the brain mask",
                        role="t1w", fix="give a T1w with positive intensities (magnitude image)")
    out = np.clip(t1 / hi, 0.0, 1.0) * 2.0 - 1.0
    return np.where(inside, out, -1.0).astype(np.float32)


def scale_pet(pet_norm: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """GM-median-normalised PET → [−1, 1] (module docstring)."""
    out = np.clip(pet_norm / PET_MAX, 0.0, 1.0) * 2.0 - 1.0
    return np.where(mask > 0, out, -1.0).astype(np.float32)


def unscale_pet(x: np.ndarray) -> np.ndarray:
    """Model output in [−1, 1] → GM-median-normalised PET units."""
    return ((np.asarray(x, dtype=np.float32) + 1.0) / 2.0 * PET_MAX).astype(np.float32)


def grid_image(grid: ModelGrid, data: np.ndarray | None = None) -> nib.Nifti1Image:
    """A NIfTI image on ``grid`` (zeros when ``data`` is None)."""
    arr = np.zeros(grid.shape, np.float32) if data is None else np.asarray(data, np.float32)
    return nib.Nifti1Image(arr, grid.affine())


def to_model_grid(registration: Registration, data: np.ndarray, t1_affine: np.ndarray,
                  grid: ModelGrid) -> np.ndarray:
    """Resample a T1w-grid array into template space on ``grid`` (linear)."""
    img = nib.Nifti1Image(np.asarray(data, np.float32), t1_affine)
    out = registration.to_template(img, "linear", reference=grid_image(grid))
    return np.asarray(out.dataobj, dtype=np.float32)


def from_model_grid(registration: Registration, data: np.ndarray, grid: ModelGrid) -> np.ndarray:
    """Resample a model-grid array back onto the subject's T1w grid (linear)."""
    out = registration.to_t1(grid_image(grid, data), "linear")
    return np.asarray(out.dataobj, dtype=np.float32)


def subject_on_grid(registration: Registration, t1: np.ndarray, mask: np.ndarray,
                    t1_affine: np.ndarray, grid: ModelGrid, pet_norm: np.ndarray | None = None
                    ) -> dict[str, np.ndarray]:
    """A subject's scaled T1w (and PET) and brain mask on the model grid.

    Scaling happens on the T1w grid (the percentile is a property of the subject's image, not
    of the resampling); the background value −1 is restored outside the resampled mask.
    """
    grid_mask = to_model_grid(registration, mask.astype(np.float32), t1_affine, grid) > 0.5
    # resample x + 1 (0 outside the brain) so that the linear interpolation at the brain edge
    # blends towards the background value instead of towards 0
    out = {"mask": grid_mask}
    mri = to_model_grid(registration, scale_mri(t1, mask) + 1.0, t1_affine, grid) - 1.0
    out["mri"] = np.where(grid_mask, mri, -1.0).astype(np.float32)
    if pet_norm is not None:
        pet = to_model_grid(registration, scale_pet(pet_norm, mask) + 1.0, t1_affine, grid) - 1.0
        out["pet"] = np.where(grid_mask, pet, -1.0).astype(np.float32)
    return out


def context_slices(volume: np.ndarray, z: int, k: int) -> np.ndarray:
    """Slice ``z`` of a (X, Y, Z) volume with ``k`` neighbours each side as channels (2k+1, X, Y).

    Neighbours beyond the volume repeat the edge slice (2.5D input; ``k = 0`` is plain 2D).
    """
    idx = np.clip(np.arange(z - k, z + k + 1), 0, volume.shape[2] - 1)
    return np.ascontiguousarray(np.moveaxis(volume[:, :, idx], 2, 0))
