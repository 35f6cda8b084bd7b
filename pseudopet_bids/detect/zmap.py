"""Difference and z-score maps (the paper's detection rule, DESIGN.md §1 step 2).

``D = real − pseudo`` (so hypometabolism, less uptake than predicted, is **negative**) and
``Z = (D − mean D) / std D`` with the mean and standard deviation (population, ``ddof=0``) taken
over the subject's own grey matter; ``Z = 0`` outside grey matter.
"""

from __future__ import annotations

import numpy as np

from pseudopet_bids.errors import DataError


def difference_map(real: np.ndarray, pseudo: np.ndarray) -> np.ndarray:
    """Difference ``D = real − pseudo`` (negative where the real PET is lower than predicted).

    Parameters
    ----------
    real
        Real (normalized) PET on the T1w grid.
    pseudo
        Pseudo-normal PET on the same grid, in the same units.

    Returns
    -------
    numpy.ndarray
        float32 difference map.
    """
    real = np.asarray(real)
    pseudo = np.asarray(pseudo)
    if real.shape != pseudo.shape:
        raise ValueError(f"real PET shape {real.shape} differs from pseudo-normal PET shape "
                         f"{pseudo.shape}")
    return real.astype(np.float32) - pseudo.astype(np.float32)


def _as_mask(mask: np.ndarray, name: str) -> np.ndarray:
    """Boolean view of a binary mask; refuses probability maps (threshold them first)."""
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask
    if not np.all((mask == 0) | (mask == 1)):
        raise ValueError(f"{name} must be binary (0/1 or bool); threshold probability maps first")
    return mask != 0


def zmap(diff: np.ndarray, gm_mask: np.ndarray, spread: np.ndarray | None = None
         ) -> np.ndarray:
    """Standardize a difference map over the grey matter.

    Parameters
    ----------
    diff
        Difference map ``D`` from :func:`difference_map`.
    gm_mask
        Binary grey-matter mask on the same grid (bool or 0/1).
    spread
        Optional voxel-wise standard deviation of the prediction (SynDiff's samples), in the
        units of ``D``: it widens the denominator where the model is unsure,
        ``Z = (D − mean_GM D) / sqrt(var_GM D + spread²)``.

    Returns
    -------
    numpy.ndarray
        float32 ``Z = (D − mean_GM D) / std_GM D`` inside the mask (or with ``spread``, as
        above), 0 outside.

    Raises
    ------
    ValueError
        Shape mismatch, non-binary mask, or non-finite ``D`` in grey matter.
    DataError
        Empty grey matter, or ``std D == 0`` over grey matter (e.g. a PET without the brain's
        uptake pattern, predicted exactly).
    """
    diff = np.asarray(diff)
    gm = _as_mask(gm_mask, "gm_mask")
    if diff.shape != gm.shape:
        raise ValueError(f"difference map shape {diff.shape} differs from GM mask shape "
                         f"{gm.shape}")
    values = diff[gm].astype(np.float64)
    if values.size == 0:
        raise DataError("z-map: no grey matter to standardise over", role="t1w",
                        fix="lower --gm-threshold, and check the grey-matter segmentation of "
                            "the T1w (label-GM_probseg)")
    if not np.all(np.isfinite(values)):
        raise ValueError("z-map: non-finite difference values inside grey matter")
    mean = values.mean()
    std = values.std()
    if not std > 0:
        raise DataError("z-map: the difference between the PET and the pseudo-normal PET is "
                        "constant over grey matter (std = 0)", role="pet",
                        fix="check that the PET is an FDG brain PET of this subject: its "
                            "uptake varies over grey matter")
    z = np.zeros(diff.shape, dtype=np.float32)
    if spread is None:
        z[gm] = ((values - mean) / std).astype(np.float32)
    else:
        if np.shape(spread) != diff.shape:
            raise ValueError(f"spread shape {np.shape(spread)} differs from the difference "
                             f"map shape {diff.shape}")
        sd = np.asarray(spread, dtype=np.float64)[gm]
        z[gm] = ((values - mean) / np.sqrt(std ** 2 + sd ** 2)).astype(np.float32)
    return z
