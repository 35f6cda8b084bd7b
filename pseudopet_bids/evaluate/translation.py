"""Translation-quality metrics of a pseudo-normal PET against the real PET (paired controls).

Inputs are arrays already scaled to [0, 1] (``data_range`` 1): ``synthesis/modelspace.py``
divides PET by its grey-matter median and by ``PET_MAX``. SSIM comes from scikit-image; PSNR,
RMSE and MAE are computed here because they are one line each. The Fréchet distance works on
feature statistics (means and covariances), whatever network produced the features.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg


def _bbox(mask: np.ndarray) -> tuple[slice, ...]:
    idx = np.nonzero(mask)
    return tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)


def _ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """scikit-image SSIM with its 7-voxel window, shrunk (odd, >= 3) for smaller arrays."""
    from skimage.metrics import structural_similarity

    side = min(a.shape)
    win = min(7, side if side % 2 else side - 1)
    if win < 3:
        return float("nan")
    return float(structural_similarity(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                       data_range=data_range, win_size=win))


def error_metrics(real: np.ndarray, pred: np.ndarray, data_range: float = 1.0
                  ) -> dict[str, float]:
    """PSNR (dB), RMSE and MAE of two equally shaped arrays (any number of values)."""
    diff = np.asarray(pred, np.float64) - np.asarray(real, np.float64)
    if diff.size == 0:
        raise ValueError("error_metrics: no values to compare")
    mse = float(np.mean(diff ** 2))
    return {"psnr": float(10 * np.log10(data_range ** 2 / max(mse, 1e-12))),
            "rmse": float(np.sqrt(mse)), "mae": float(np.mean(np.abs(diff)))}


def volume_metrics(real: np.ndarray, pred: np.ndarray, mask: np.ndarray | None = None,
                   data_range: float = 1.0) -> dict[str, float]:
    """SSIM, PSNR, RMSE, MAE of two volumes, over the whole image and inside ``mask``.

    Keys ``*_image`` use every voxel (SSIM over the whole array); keys ``*_brain`` use the mask's
    voxels for PSNR/RMSE/MAE and the mask's bounding box for SSIM (a local-window statistic
    needs a box, not a scattered voxel set).
    """
    real = np.asarray(real, np.float64)
    pred = np.asarray(pred, np.float64)
    if real.shape != pred.shape:
        raise ValueError(f"volume_metrics: shapes differ {real.shape} != {pred.shape}")
    out = {f"{k}_image": v for k, v in error_metrics(real, pred, data_range).items()}
    out["ssim_image"] = _ssim(real, pred, data_range)
    if mask is not None:
        mask = np.asarray(mask, bool)
        if not mask.any():
            raise ValueError("volume_metrics: empty mask")
        out.update({f"{k}_brain": v for k, v in
                    error_metrics(real[mask], pred[mask], data_range).items()})
        box = _bbox(mask)
        out["ssim_brain"] = _ssim(real[box], pred[box], data_range)
    return out


def slice_metrics(real: np.ndarray, pred: np.ndarray, mask: np.ndarray, axis: int = 2,
                  data_range: float = 1.0) -> list[dict[str, float]]:
    """Per-slice SSIM (2D, whole slice), PSNR, RMSE, MAE (inside the mask) of slices with brain."""
    rows = []
    # views, not np.take: taking a slice of a 256³ Fortran-ordered NIfTI array copies ~0.1 s
    real, pred, mask = (np.moveaxis(np.asarray(a), axis, 0) for a in (real, pred, mask))
    has_brain = mask.reshape(len(mask), -1).any(axis=1)
    for k in np.flatnonzero(has_brain):
        r, p, m = real[k], pred[k], mask[k]
        row = {"slice": int(k), **error_metrics(r[m], p[m], data_range)}
        row["ssim"] = _ssim(r, p, data_range)
        rows.append(row)
    return rows


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """Fréchet distance between two Gaussians: ‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½).

    The quantity behind FID (Heusel et al. 2017). A tiny diagonal offset is added when the
    product of the covariances is singular, and the imaginary round-off of ``sqrtm`` dropped.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError("frechet_distance: mismatched shapes")
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        eps = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def singular_value_spectrum(slices: np.ndarray) -> np.ndarray:
    """Mean normalised singular-value spectrum of a stack of 2D slices (N, H, W).

    Each slice's singular values are divided by their sum, so the spectrum describes how the
    image's energy spreads over components (blurry images concentrate it in the first ones).
    """
    slices = np.asarray(slices, np.float64)
    if slices.ndim != 3 or len(slices) == 0:
        raise ValueError("singular_value_spectrum: expected a non-empty (N, H, W) stack")
    spectra = []
    for s in slices:
        sv = np.linalg.svd(s, compute_uv=False)
        total = sv.sum()
        spectra.append(sv / total if total > 0 else sv)
    return np.mean(spectra, axis=0)


def spectrum_distance(a: np.ndarray, b: np.ndarray) -> float:
    """L1 distance between two normalised spectra (0 = identical, at most 2)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError("spectrum_distance: spectra of different lengths")
    return float(np.abs(a - b).sum())
