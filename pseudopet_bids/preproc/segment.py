"""Grey matter / white matter / CSF probability maps of a T1w inside its brain mask.

Two steps, each usable on its own:

:func:`bias_correct`
    N4 (Tustison et al. 2010, via antspyx) estimated on a 2 mm copy of the image inside the
    brain mask (shrink 4, three fitting levels) and applied on the native grid: ~1.5 s on a 1 mm
    T1w instead of ~8 s. Three levels (a B-spline mesh of 4 elements per axis at the end) and not
    four: on simulated heads a fourth level started to absorb the GM/WM contrast (GM Dice
    0.94 -> 0.91 on an unbiased head) without correcting a real bias any better.
:func:`segment_tissues`
    A 3-class Gaussian mixture on the bias-corrected intensities with a mean-field Potts (MRF)
    neighbourhood term and, when given, template tissue priors (SPM/FAST-like). It runs in numpy
    (~4 s on a 1 mm T1w, deterministic). ``method="atropos"`` runs ANTs Atropos instead (same
    model family, ~25 s on a 1 mm T1w with 2 cores, which is why it is not the default).

The classes are CSF < GM < WM in T1w intensity; with priors each class is tied to its prior.
"""

from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from pseudopet_bids.errors import DataError
from pseudopet_bids.preproc._ants import (ants_session, box_affine, from_ants, mask_box,
                                          resample_to_spacing, to_ants)

if TYPE_CHECKING:  # antspyx has no type information: Any to mypy
    from ants import ANTsImage

CLASSES: tuple[str, str, str] = ("CSF", "GM", "WM")


def bias_correct(t1: nib.Nifti1Image, mask: nib.Nifti1Image | None = None,
                 resolution_mm: float = 2.0, omp_nthreads: int = 1) -> nib.Nifti1Image:
    """N4 bias-field correction, estimated at ``resolution_mm`` and applied on the T1w grid.

    Parameters
    ----------
    t1
        T1w image (RAS, float32).
    mask
        Brain mask on the T1w grid; the field is fitted only inside it (recommended: scalp
        fat and neck otherwise pull the fit). ``None`` fits over the head (``T1w > 0``).
    resolution_mm
        Grid spacing on which the field is estimated (never finer than the input).
    omp_nthreads
        ITK threads.

    Returns
    -------
    nib.Nifti1Image
        Corrected T1w (float32) on the input grid; the mean intensity inside the mask is kept.
    """
    import ants

    data = np.asarray(t1.dataobj, dtype=np.float32)
    fit_mask = (np.asarray(mask.dataobj) > 0) if mask is not None else data > 0
    if fit_mask.sum() < 100:
        raise ValueError("bias_correct: the mask holds fewer than 100 voxels")
    # N4 works on log intensities: keep them strictly positive.
    floor = max(float(np.percentile(data[fit_mask], 1)) * 1e-3, 1e-6)
    positive = np.maximum(data, floor)
    with ants_session(None, omp_nthreads):
        full = to_ants(t1, positive)
        spacing = max(resolution_mm, float(min(full.spacing)))
        small = resample_to_spacing(full, spacing, "linear")
        small_mask = ants.resample_image_to_target(to_ants(t1, fit_mask.astype(np.float32)),
                                                   small, interp_type="nearestNeighbor")
        field = ants.n4_bias_field_correction(
            small, mask=small_mask, shrink_factor=4,
            convergence={"iters": [50, 50, 50], "tol": 1e-7}, return_bias_field=True)
        # interpolate log(field): the field is multiplicative
        log_field = field.new_image_like(np.log(np.maximum(field.numpy(), 1e-6)))
        log_full = ants.resample_image_to_target(log_field, full, interp_type="linear").numpy()
    corrected = positive / np.exp(log_full)
    corrected *= float(positive[fit_mask].mean() / max(corrected[fit_mask].mean(), 1e-12))
    corrected[data <= 0] = 0.0
    return nib.Nifti1Image(corrected.astype(np.float32), t1.affine)


def _kmeans_1d(y: np.ndarray, k: int = 3, n_iter: int = 20) -> np.ndarray:
    """Deterministic 1D k-means (Lloyd from quantiles); returns sorted centres."""
    centres = np.quantile(y, np.linspace(0.15, 0.85, k))
    for _ in range(n_iter):
        edges = (centres[1:] + centres[:-1]) / 2
        lab = np.searchsorted(edges, y)
        new = np.array([y[lab == j].mean() if np.any(lab == j) else centres[j] for j in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    return np.sort(centres)


def _neighbour_mean(vol: np.ndarray) -> np.ndarray:
    """Mean of the 6 face neighbours of every voxel (0 beyond the edges).

    Six shifted adds are ~10x faster than a 3x3x3 ``uniform_filter`` on a brain box, and the
    6-neighbourhood is the usual Potts neighbourhood (FSL FAST).
    """
    out = np.zeros_like(vol)
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        out[tuple(lo)] += vol[tuple(hi)]
        out[tuple(hi)] += vol[tuple(lo)]
    out *= np.float32(1.0 / 6.0)
    return out


def _gmm_mrf(y: np.ndarray, where: tuple[np.ndarray, ...], shape: tuple[int, ...],
             priors: np.ndarray | None, prior_weight: float, beta: float,
             n_iter: int) -> np.ndarray:
    """EM for a 1D 3-class Gaussian mixture with a mean-field Potts term.

    ``y`` are the intensities at voxel indices ``where`` of a box of ``shape``; ``priors`` (3, N)
    are template probabilities in class order. Returns posteriors (3, N).
    """
    k = 3
    if priors is not None:
        w = priors / np.maximum(priors.sum(axis=0, keepdims=True), 1e-6)
        mu = (w @ y) / w.sum(axis=1)
        # priors are blurry at tissue borders: estimate the initial means from confident voxels
        for j in range(k):
            sure = w[j] > 0.8
            if sure.sum() > 50:
                mu[j] = np.median(y[sure])
    else:
        mu = _kmeans_1d(y, k)
    spread = float(np.std(y)) or 1.0
    sd = np.full(k, spread / (2 * k))
    mix = np.full(k, 1.0 / k)
    log_atlas = None
    if priors is not None:
        log_atlas = (prior_weight * np.log(np.clip(priors, 1e-3, 1.0))).astype(np.float32)
    # flat indices into the box: one take/put per class instead of fancy 3-index addressing
    flat = np.ravel_multi_index(where, shape)
    vol = np.zeros(int(np.prod(shape)), dtype=np.float32)
    post = np.full((k, y.size), 1.0 / k, dtype=np.float32)
    log_p = np.empty((k, y.size), dtype=np.float32)
    for it in range(n_iter):
        for j in range(k):
            z = (y - np.float32(mu[j])) * np.float32(1.0 / sd[j])
            np.multiply(z, z, out=log_p[j])
            log_p[j] *= np.float32(-0.5)
            log_p[j] += np.float32(np.log(mix[j]) - np.log(sd[j]))
            if log_atlas is not None:
                log_p[j] += log_atlas[j]
            if beta > 0 and it > 0:
                # mean-field Potts: reward the class that the 6 face neighbours hold
                vol[flat] = post[j]
                nb = _neighbour_mean(vol.reshape(shape))
                log_p[j] += np.float32(beta) * nb.reshape(-1)[flat]
        log_p -= log_p.max(axis=0, keepdims=True)
        np.exp(log_p, out=post)
        post /= post.sum(axis=0, keepdims=True)
        nk = post.sum(axis=1, dtype=np.float64) + 1e-9
        mu = (post @ y).astype(np.float64) / nk
        m2 = (post @ (y * y)).astype(np.float64) / nk
        sd = np.sqrt(np.maximum(m2 - mu ** 2, (spread * 1e-3) ** 2))
        mix = nk / nk.sum()
        if priors is None:
            order = np.argsort(mu)  # keep CSF < GM < WM
            mu, sd, mix, post = mu[order], sd[order], mix[order], post[order]
    return post


def segment_tissues(t1: nib.Nifti1Image, mask: nib.Nifti1Image, seed: int = 0,
                    priors: dict[str, nib.Nifti1Image] | None = None, *,
                    method: str = "gmm", bias_correction: bool = True,
                    prior_weight: float = 0.5, mrf_beta: float = 1.0, n_iter: int = 12,
                    omp_nthreads: int = 1) -> dict[str, nib.Nifti1Image]:
    """GM / WM / CSF probability maps inside the brain mask.

    Parameters
    ----------
    t1
        T1w (RAS, float32), skull present or not.
    mask
        Brain mask on the T1w grid.
    seed
        Random seed (the numpy mixture is deterministic; passed to ANTs for ``atropos``).
    priors
        Optional ``{"GM", "WM", "CSF"}`` template probability maps already on the T1w grid
        (e.g. ``TemplateRegistration.to_t1(load_template("GM"), "linear")``). They initialise the
        classes and weight the posteriors by ``prior ** prior_weight``.
    method
        ``gmm`` (numpy mixture + MRF, default) or ``atropos`` (ANTs Atropos, slower).
    bias_correction
        Run :func:`bias_correct` first (turn off if the input already is corrected).
    prior_weight, mrf_beta, n_iter
        Strength of the template priors, of the neighbourhood term, and EM iterations (``gmm``).
    omp_nthreads
        ITK threads (N4, Atropos).

    Returns
    -------
    dict[str, nib.Nifti1Image]
        ``GM``, ``WM``, ``CSF`` float32 probabilities on the T1w grid: they sum to 1 inside the
        mask and are 0 outside.
    """
    if method not in ("gmm", "atropos"):
        raise ValueError(f"unknown segmentation method {method!r}; choose 'gmm' or 'atropos'")
    inside = np.asarray(mask.dataobj) > 0
    if inside.shape != t1.shape[:3]:
        raise ValueError(f"mask shape {inside.shape} differs from the T1w shape {t1.shape[:3]}")
    if inside.sum() < 1000:
        raise DataError(f"tissue segmentation: the brain holds only {int(inside.sum())} voxels "
                        "of the T1w (at least 1000 are needed): the image is too coarse",
                        role="t1w", fix="give a T1w with voxels of 1 to 2 mm")
    prior_stack = None
    if priors is not None:
        missing = {"GM", "WM", "CSF"} - set(priors)
        if missing:
            raise ValueError(f"priors lack {sorted(missing)}")
        prior_stack = np.stack([np.asarray(priors[c].dataobj, dtype=np.float32) for c in CLASSES])
        if prior_stack.shape[1:] != inside.shape:
            raise ValueError("priors must lie on the T1w grid (use TemplateRegistration.to_t1)")
    # everything happens in the mask's bounding box (+5 mm): N4, the mixture and its MRF cost
    # scale with the voxels handled, and the box is ~3x smaller than a 256³ head grid
    box = mask_box(inside, t1.affine, 5.0)
    sub_affine = box_affine(t1.affine, box)
    sub_inside = inside[box]
    sub_t1 = nib.Nifti1Image(np.asarray(t1.dataobj, dtype=np.float32)[box], sub_affine)
    sub_mask = nib.Nifti1Image(sub_inside.astype(np.uint8), sub_affine)
    img = bias_correct(sub_t1, sub_mask, omp_nthreads=omp_nthreads) if bias_correction else sub_t1
    data = np.asarray(img.dataobj, dtype=np.float32)
    sub_priors = prior_stack[(slice(None),) + box] if prior_stack is not None else None

    if method == "atropos":
        post = _atropos(img, sub_inside, sub_priors, prior_weight, seed, omp_nthreads)
    else:
        where = np.nonzero(sub_inside)
        y = data[where]
        lo, hi = np.percentile(y, [0.5, 99.5])
        y = ((np.clip(y, lo, hi) - lo) / max(float(hi - lo), 1e-6)).astype(np.float32)
        pri = sub_priors[(slice(None),) + where] if sub_priors is not None else None
        post_in = _gmm_mrf(y, where, sub_inside.shape, pri, prior_weight, mrf_beta, n_iter)
        post = np.zeros((3,) + sub_inside.shape, dtype=np.float32)
        for j in range(3):
            post[j][where] = post_in[j]
    total = post.sum(axis=0)
    post[:, sub_inside] /= np.maximum(total[sub_inside], 1e-12)
    post[:, ~sub_inside] = 0.0
    post_full = np.zeros((3,) + inside.shape, dtype=np.float32)
    post_full[(slice(None),) + box] = post
    return {name: nib.Nifti1Image(post_full[j], t1.affine)
            for j, name in enumerate(CLASSES)}


def _atropos(img: nib.Nifti1Image, inside: np.ndarray, prior_stack: np.ndarray | None,
             prior_weight: float, seed: int, omp_nthreads: int) -> np.ndarray:
    """Atropos posteriors (3, X, Y, Z) in CSF, GM, WM order."""
    import ants

    with ants_session(seed, omp_nthreads), tempfile.TemporaryDirectory(prefix="atropos") as tmp:
        a = to_ants(img)
        m = to_ants(img, inside.astype(np.float32))
        old = tempfile.tempdir
        tempfile.tempdir = tmp  # antspyx writes its probability images with mktemp()
        try:
            init: str | list[ANTsImage]
            if prior_stack is None:
                init = "Kmeans[3]"
            else:
                init = [to_ants(img, p) for p in prior_stack]
            seg = ants.atropos(a=a, x=m, i=init, m="[0.1,1x1x1]", c="[5,0]",
                               priorweight=prior_weight)
        finally:
            tempfile.tempdir = old
        return np.stack([from_ants(p).get_fdata(dtype=np.float32)
                         for p in seg["probabilityimages"]])
