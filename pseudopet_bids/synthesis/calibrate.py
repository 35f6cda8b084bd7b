"""Subject calibration of a learned pseudo-normal PET (``--calibration compartments``).

A learned model predicts PET from the T1w alone. It supplies the within-region pattern of
normal uptake (gyral detail, deep nuclei, the mesial temporal lobe) but cannot know the
subject's own regional levels: global and regional metabolism vary between healthy people in
ways no T1w shows. The tissue baseline fits those levels to the subject's PET, which is why it
is hard to beat. Calibration keeps the best of both: the prediction is multiplied by a smooth
gain field whose per-compartment gains are fitted robustly to the subject's own PET::

    PET(x) ≈ G(x) · P(x),    G(x) = Σ_k g_k · w_k(x)

* ``P`` is the learned pseudo-normal PET (GM-median normalised, like the real PET).
* ``w_k`` is a smooth partition of unity over the brain: the subject's GM probability in each
  compartment ``k`` of the tissue model (frontal, temporal with the mesial temporal structures,
  parietal, occipital, deep grey nuclei, cerebellum, other GM; each left/right pair shares
  one; :data:`MERGED_COMPARTMENTS` says why mesial temporal has no gain of its own), WM and CSF,
  each blurred by the PET resolution and divided by their sum. Blurring keeps ``G`` free of
  steps at compartment borders, which would otherwise show up in the Z-map; the partition of
  unity means that all gains equal to 1 give back ``P`` unchanged.
* ``g_k ≥ 0`` are fitted by the tissue model's robust regression
  (:func:`pseudopet_bids.models.tissue.irls_nnls`: Huber, then Tukey's biweight), so the
  hypometabolic focus, a small share of a compartment's voxels, is down-weighted instead of
  pulling its compartment's gain down. Left and right share a gain, so a unilateral lobar
  deficit stays visible, as with the symmetric tissue model.

The calibrated prediction is as good as the learned one where the normal pattern is one the
tissue maps cannot fit, and as good as the baseline where the subject's regional levels differ
from the training controls' (``docs/model_comparison.md``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage

from pseudopet_bids.models.tissue import (FWHM_TO_SIGMA, GAUSS_TRUNCATE, MAX_FIT_VOXELS,
                                         compartment_map, irls_nnls, mask_box, stride_sample)
#: Compartments of the tissue model that get no gain of their own. The mesial temporal
#: structures (hippocampus, parahippocampal gyrus, amygdala: about 10 cm³ of GM per side) are
#: the commonest seat of a focus and smaller than many foci: a gain of their own would be
#: fitted mostly to the focus, and a robust fit can only ignore outliers that are a minority of
#: a compartment's voxels. They share the temporal lobes' gain.
MERGED_COMPARTMENTS = {"mesial-temporal": "temporal"}


def partition(tissues: dict[str, np.ndarray], mask: np.ndarray, aal_labels: np.ndarray | None,
              voxel_sizes: tuple[float, float, float], pet_fwhm_mm: float
              ) -> tuple[list[np.ndarray], list[str]]:
    """The smooth partition of unity ``w_k`` over the brain mask (see module docstring).

    Returns
    -------
    weights, names
        One float32 map per compartment (zero outside ``mask``; they sum to 1 inside it where
        any tissue is present) and its name (``gm:<compartment>``, ``WM``, ``CSF``).
    """
    mask = np.asarray(mask) != 0
    gm = np.where(mask, tissues["GM"], 0).astype(np.float32)
    comp_names: tuple[str, ...]
    if aal_labels is None:
        comp, comp_names = np.zeros(mask.shape, np.int16), ("GM",)
    else:
        comp, comp_names = compartment_map(aal_labels, symmetric=True, fill_mask=mask & (gm > 0),
                                           voxel_sizes=voxel_sizes)
    sigma = tuple(pet_fwhm_mm * FWHM_TO_SIGMA / v for v in voxel_sizes)
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(comp_names):
        groups.setdefault(MERGED_COMPARTMENTS.get(name, name), []).append(i)
    parts, names = [], []
    for name, members in groups.items():
        part = np.where(np.isin(comp, members), gm, 0).astype(np.float32)
        if part.any():
            parts.append(part)
            names.append(f"gm:{name}")
    for tissue in ("WM", "CSF"):
        parts.append(np.where(mask, tissues[tissue], 0).astype(np.float32))
        names.append(tissue)
    if pet_fwhm_mm > 0:
        parts = [ndimage.gaussian_filter(p, sigma, mode="constant", truncate=GAUSS_TRUNCATE)
                 for p in parts]
    total = np.zeros(mask.shape, np.float32)
    for part in parts:
        total += part
    inside = mask & (total > 0)
    divisor = np.where(inside, total, 1.0).astype(np.float32)
    weights = [np.where(inside, part / divisor, 0).astype(np.float32) for part in parts]
    return weights, names


def calibrate_to_subject(pseudo: np.ndarray, pet: np.ndarray, tissues: dict[str, np.ndarray],
                         mask: np.ndarray, voxel_sizes: tuple[float, float, float],
                         aal_labels: np.ndarray | None = None, pet_fwhm_mm: float = 6.0
                         ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Fit per-compartment gains of a learned prediction to the subject's own PET.

    Parameters
    ----------
    pseudo
        Learned pseudo-normal PET on the T1w grid (normalised units, 0 outside the brain).
    pet
        The subject's real PET on the same grid, in the same units.
    tissues
        ``{"GM", "WM", "CSF"}`` probability maps on the same grid.
    mask
        Brain mask; the fit and the gain field are restricted to it.
    voxel_sizes
        Voxel sizes in mm (blur width, compartment fill distance).
    aal_labels
        AAL label map on the same grid; None = one GM gain.
    pet_fwhm_mm
        Width of the blur that smooths the compartment borders (the PET resolution).

    Returns
    -------
    calibrated, gain, info
        ``gain · pseudo`` (float32), the gain field ``G`` (1 outside the brain), and a dict
        for the sidecars: ``Method``, ``Gains`` (per compartment), ``Iterations``,
        ``Converged``, ``FractionRejected`` (fit voxels with weight 0), ``ResidualScale``,
        ``FitVoxels``.

    Raises
    ------
    ValueError
        Shapes differ, or the brain mask is empty.
    """
    mask = np.asarray(mask) != 0
    pseudo = np.asarray(pseudo, dtype=np.float32)
    pet = np.asarray(pet, dtype=np.float32)
    for name, arr in (("PET", pet), ("pseudo-normal PET", pseudo),
                      *((k, tissues[k]) for k in ("GM", "WM", "CSF"))):
        if np.shape(arr) != mask.shape:
            raise ValueError(f"{name} shape {np.shape(arr)} differs from the brain mask "
                             f"shape {mask.shape}")
    if not mask.any():
        raise ValueError("calibration: the brain mask is empty")
    # the work is done in the brain's box plus the blur radius: the same result, less memory
    sigma = (pet_fwhm_mm * FWHM_TO_SIGMA / v for v in voxel_sizes)
    box = mask_box(mask, tuple(math.ceil(GAUSS_TRUNCATE * s) + 1 for s in sigma))
    m = mask[box]
    weights, names = partition({k: np.asarray(tissues[k])[box] for k in ("GM", "WM", "CSF")},
                               m, None if aal_labels is None else np.asarray(aal_labels)[box],
                               voxel_sizes, pet_fwhm_mm)
    sample, stride = stride_sample(m, MAX_FIT_VOXELS)
    y = pet[box][sample].astype(np.float64)
    p = pseudo[box][sample].astype(np.float64)
    x = np.stack([p * w[sample] for w in weights], axis=1)
    keep = np.flatnonzero(np.any(x != 0, axis=0))
    gains = np.ones(len(names))
    beta, fit_weights, fit = irls_nnls(x[:, keep], y, "tukey")
    gains[keep] = beta
    field = np.zeros(m.shape, np.float32)
    covered = np.zeros(m.shape, bool)
    for g, w in zip(gains, weights):
        field += np.float32(g) * w
        covered |= w > 0
    gain = np.ones(mask.shape, np.float32)
    gain[box] = np.where(covered, field, 1.0)
    calibrated = (pseudo * gain).astype(np.float32)
    info = {"Method": "compartments",
            "Gains": {n: round(float(g), 6) for n, g in zip(names, gains)},
            "Iterations": int(fit["iterations"]), "Converged": bool(fit["converged"]),
            "FractionRejected": round(float(np.mean(fit_weights == 0)), 6),
            "ResidualScale": round(float(fit["scale"]), 6), "FitVoxels": int(y.size),
            "SampleStride": int(stride), "BorderFWHM_mm": float(pet_fwhm_mm)}
    return calibrated, gain, info


__all__ = ["MAX_FIT_VOXELS", "MERGED_COMPARTMENTS", "partition", "calibrate_to_subject"]
