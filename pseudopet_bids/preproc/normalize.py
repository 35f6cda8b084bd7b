"""PET intensity normalization (pure array functions).

FDG uptake in Bq/mL depends on injected dose, body weight and timing, so PET volumes are put on a
common scale by dividing by the uptake of a reference region before they are compared with a
model. Two methods:

``gm-median`` (default)
    Divide by the **median** PET value inside the reference region, normally grey matter with
    probability > 0.5 inside the brain mask (see :func:`reference_region`). The median ignores a
    focal hypometabolism that covers less than half of the grey matter, which the mean does not.
``brain-mean``
    Divide by the **mean** PET value inside the reference region (pass the brain mask). Global-mean
    scaling, the classic SPM "proportional scaling" choice; kept for comparison.

The normalized image is unitless (a ratio to the reference uptake).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pseudopet_bids.errors import DataError

#: Normalization methods accepted by :func:`normalize_pet`.
METHODS: tuple[str, ...] = ("gm-median", "brain-mean")


def reference_region(gm_prob: np.ndarray, brain_mask: np.ndarray,
                     threshold: float = 0.5) -> np.ndarray:
    """Grey-matter reference region for ``gm-median`` normalization.

    Parameters
    ----------
    gm_prob
        Grey-matter probability map on the PET grid, values in [0, 1].
    brain_mask
        Brain mask on the same grid (non-zero = brain).
    threshold
        Voxels with ``gm_prob > threshold`` inside the brain mask form the region.

    Returns
    -------
    numpy.ndarray
        Boolean mask.
    """
    gm_prob = np.asarray(gm_prob)
    brain_mask = np.asarray(brain_mask)
    if gm_prob.shape != brain_mask.shape:
        raise ValueError(f"GM map shape {gm_prob.shape} differs from brain mask shape "
                         f"{brain_mask.shape}")
    return (gm_prob > threshold) & (brain_mask != 0)


def normalize_pet(pet: np.ndarray, reference_mask: np.ndarray,
                  method: str = "gm-median") -> tuple[np.ndarray, float, dict[str, Any]]:
    """Divide a PET volume by the uptake of a reference region.

    Parameters
    ----------
    pet
        PET volume (any real dtype), e.g. on the T1w grid.
    reference_mask
        Reference region on the same grid (non-zero = inside). For ``gm-median`` pass
        :func:`reference_region` (GM probability > 0.5 inside the brain mask); for
        ``brain-mean`` pass the brain mask.
    method
        ``gm-median`` (default) or ``brain-mean``; see the module docstring.

    Returns
    -------
    normalized : numpy.ndarray
        ``pet / scale`` as float32, same shape.
    scale : float
        The value divided by (in the units of ``pet``).
    info : dict
        JSON-serialisable description for sidecars: ``Method``, ``Scale``, ``ReferenceRegion``,
        ``ReferenceVoxels``.

    Raises
    ------
    ValueError
        Unknown method, shape mismatch, or non-finite reference values.
    DataError
        An empty reference region, or a scale that is not strictly positive (e.g. a PET that
        is zero in grey matter).
    """
    if method not in METHODS:
        raise ValueError(f"unknown PET normalization {method!r}; choose from {list(METHODS)}")
    pet = np.asarray(pet)
    mask = np.asarray(reference_mask)
    if pet.shape != mask.shape:
        raise ValueError(f"PET shape {pet.shape} differs from reference mask shape {mask.shape}")
    values = pet[mask != 0].astype(np.float64)
    if values.size == 0:
        raise DataError(f"PET normalization ({method}): the reference region is empty",
                        role="t1w", fix="check the brain mask and grey-matter segmentation of "
                                        "the T1w; lower --gm-threshold")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"PET normalization ({method}): non-finite PET values in the reference "
                         "region")
    scale = float(np.median(values)) if method == "gm-median" else float(values.mean())
    if not scale > 0:
        raise DataError(f"PET normalization ({method}): reference uptake is {scale:g} (must be "
                        "> 0)", role="pet", fix="check that the PET is non-negative and covers "
                                               "the brain of the T1w")
    normalized = pet.astype(np.float32) / np.float32(scale)
    region = ("grey matter (probability > 0.5) inside the brain mask" if method == "gm-median"
              else "brain mask")
    info = {
        "Method": method,
        "Scale": scale,
        "ReferenceRegion": region,
        "ReferenceVoxels": int(values.size),
    }
    return normalized, scale, info
