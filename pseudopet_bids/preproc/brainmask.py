"""Brain mask of a raw-head T1w (scalp, skull and neck present).

Methods
-------
``deepbet`` (default)
    deepbet (Fisch et al. 2024): two 3D U-Nets shipped as TorchScript files inside the PyPI
    wheel (a 128³ bounding-box net, then a 256³ mask net on the crop), run on CPU from an
    in-memory array. ~3.5 s on 2 idle cores for a 1 mm head; on simulated heads it keeps all
    brain tissue (Dice 0.96–0.98; it follows the inner skull, CSF included), and it gives a
    clean mask on the real Colin27 head (see ``docs/skullstrip.md``).
``template``
    Registration of the head to the skull-stripped template (rigid, affine, then SyN at 3 mm;
    Mattes MI restricted to a dilated template brain mask so that scalp and skull cannot pull
    the fit), started from a head-top heuristic; the template brain mask is warped back. A mask
    that fails gross checks (volume, inside the head, near the vertex) is redone from other
    starts, and after three failures the subject stops with a clear error. No
    network weights, ~8-10 s; it follows the template's tight brain outline, and it is favoured
    by our benchmark (the simulated brains are warped templates).
"""

from __future__ import annotations

import functools
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
from scipy import ndimage

from pseudopet_bids import resources
from pseudopet_bids.errors import DataError
from pseudopet_bids.preproc._ants import ants_affine, ants_session, resample_to_spacing, to_ants
from pseudopet_bids.preproc.coregister import ras_to_ants_transform

if TYPE_CHECKING:  # no type information in antspyx and deepbet: Any to mypy
    from ants import ANTsImage
    from deepbet.bet import BrainExtraction

LOGGER = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("deepbet", "template")
#: deepbet was trained on ~1 mm T1w; coarser or anisotropic inputs are resampled to this first.
DEEPBET_MM = 1.0
#: Neighbouring voxels of a brain image correlate (r 0.85-0.9 at 1 mm, still 0.7 on a noisy
#: 3 mm phantom); those of random noise do not (r ~ 0). Below this, what the method outlined
#: is not a brain (deepbet outlines a "brain" of plausible volume in a volume of noise).
MIN_NEIGHBOUR_CORRELATION = 0.3
#: The fix of a T1w in which no brain is found (the other method is added to it).
NO_BRAIN_FIX = ("check that the file is a T1-weighted MRI of a head (not another modality, a "
                "mask, noise or an empty volume); if it is, try --skullstrip ")


@functools.lru_cache(maxsize=1)
def _deepbet_model() -> BrainExtraction:
    """The deepbet networks, loaded once per process (TorchScript files inside the wheel)."""
    from deepbet.bet import BrainExtraction

    return BrainExtraction(no_gpu=True)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
    return labels == (int(np.argmax(sizes)) + 1)


def _deepbet(t1: nib.Nifti1Image, omp_nthreads: int) -> np.ndarray:
    """deepbet mask (bool) on the T1w grid."""
    import torch

    zooms = np.asarray(t1.header.get_zooms()[:3], dtype=np.float64)
    resample = bool(np.any(np.abs(zooms - DEEPBET_MM) > 0.25))
    img = t1
    if resample:
        # the nets see the head crop rescaled to 256³, so voxel aspect must be ~isotropic
        with ants_session(None, omp_nthreads):
            img = _from_ants_float(resample_to_spacing(to_ants(t1), DEEPBET_MM, "linear"))
    data = np.nan_to_num(np.asarray(img.dataobj, dtype=np.float32))
    if nib.aff2axcodes(img.affine) != ("R", "A", "S"):
        raise ValueError("brain_mask expects a RAS-oriented image (see io.intake)")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(omp_nthreads)))
    try:
        bet = _deepbet_model()
        try:
            prob = bet.run_model(data.copy())
        except (AssertionError, ValueError) as exc:
            # its box net found no head: deepbet asserts (no bounding box), or fails keeping
            # the largest of no connected components (numpy: argmax of an empty sequence)
            raise DataError(f"deepbet found no head in the T1w ({exc})", role="t1w",
                            fix=NO_BRAIN_FIX + "template") from exc
        if not np.any(prob > 0.5):
            raise DataError("deepbet found no brain in the T1w", role="t1w",
                            fix=NO_BRAIN_FIX + "template")
        mask = bet.postprocess(prob > 0.5)  # largest component, fill holes, in the bbox
    finally:
        torch.set_num_threads(old_threads)
    mask = np.asarray(mask, dtype=bool)
    if resample:
        mask = _resample_mask(mask.astype(np.float32), img.affine, t1)
    return mask


def _from_ants_float(aimg: ANTsImage) -> nib.Nifti1Image:
    return nib.Nifti1Image(np.asarray(aimg.numpy(), dtype=np.float32), ants_affine(aimg))


def _resample_mask(values: np.ndarray, affine: np.ndarray, target: nib.Nifti1Image) -> np.ndarray:
    """Linear resampling of a 0/1 map onto ``target``'s grid, thresholded at 0.5."""
    vox = np.linalg.inv(affine) @ target.affine
    out = ndimage.affine_transform(values, vox, output_shape=target.shape[:3], order=1,
                                   mode="constant", cval=0.0)
    return out >= 0.5


def _head_top_start(head: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Guess of the brain's centre (RAS mm) from the top of the head.

    The centre of mass of a head image sits low (neck, face); the vertex does not move with
    the field of view. The template brain's centre lies ~80 mm below the skin at the vertex
    (~68 mm below the brain top plus ~12 mm of scalp and skull). Assumes the superior axis is
    +z in scanner space, as for any T1w acquisition.
    """
    fg = head > np.percentile(head[head > 0], 40) if np.any(head > 0) else head > 0
    fg = _largest_component(ndimage.binary_opening(fg, iterations=1))
    ijk = np.argwhere(fg)
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    top = float(np.percentile(xyz[:, 2], 99.5))
    slab = (xyz[:, 2] > top - 110.0) & (xyz[:, 2] < top - 20.0)
    centre = xyz[slab].mean(axis=0) if slab.any() else xyz.mean(axis=0)
    centre[2] = top - 80.0
    return centre


#: Starts tried in turn by the template method (mm added to the head-top estimate, seed offset):
#: a registration that lands in a wrong minimum (seen once on another CPU: Dice 0.07) is caught
#: by :func:`_implausible` and redone from a shifted start with another sampling seed.
TEMPLATE_STARTS: tuple[tuple[tuple[float, float, float], int], ...] = (
    ((0.0, 0.0, 0.0), 0), ((0.0, 0.0, 12.0), 1), ((0.0, 10.0, -12.0), 2))


def _implausible(mask: np.ndarray, head: np.ndarray, affine: np.ndarray,
                 template_ml: float) -> str | None:
    """Why a warped template brain mask cannot be right (``None`` when it can).

    Gross failures only: a brain whose volume is far from the template's (the affine ran off),
    one that leaves the head, or one that sits far below the vertex (slid into the neck).
    """
    if not mask.any():
        return "empty mask"
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    ratio = mask.sum() * voxel_ml / template_ml
    if not 0.55 <= ratio <= 1.8:
        return f"brain volume {ratio:.2f}x the template's"
    fg = head > np.percentile(head[head > 0], 40) if np.any(head > 0) else head > 0
    filled = ndimage.binary_fill_holes(ndimage.binary_closing(fg, iterations=2))
    inside = float(filled[mask].mean())
    if inside < 0.9:
        return f"only {100 * inside:.0f}% of the brain inside the head"
    z_of = (lambda m: (np.argwhere(m) @ affine[:3, :3].T + affine[:3, 3])[:, 2])
    gap = float(np.percentile(z_of(filled), 99.5) - np.percentile(z_of(mask), 99.5))
    if not 0.0 <= gap <= 40.0:
        return f"brain top {gap:.0f} mm below the head top"
    return None


def _template_mask(t1: nib.Nifti1Image, omp_nthreads: int, seed: int = 0) -> np.ndarray:
    """Template-registration brain mask (bool) on the T1w grid, retried when implausible."""
    tmask_img = resources.load_template("mask")
    t_mask = np.asarray(tmask_img.dataobj) > 0
    template_ml = t_mask.sum() * abs(float(np.linalg.det(tmask_img.affine[:3, :3]))) / 1000.0
    head = np.nan_to_num(np.asarray(t1.dataobj, dtype=np.float32))
    reasons = []
    for offset, dseed in TEMPLATE_STARTS:
        mask = _register_template_mask(t1, omp_nthreads, seed + dseed, np.asarray(offset))
        why = _implausible(mask, head, t1.affine, template_ml)
        if why is None:
            return mask
        reasons.append(why)
        LOGGER.warning("template brain mask implausible (%s); retrying from another start", why)
    raise DataError("brain mask (template): registration to the template failed from every "
                    f"start ({'; '.join(reasons)})", role="t1w", fix=NO_BRAIN_FIX + "deepbet")


def _register_template_mask(t1: nib.Nifti1Image, omp_nthreads: int, seed: int,
                            offset_mm: np.ndarray) -> np.ndarray:
    """One rigid → affine → SyN registration from a head-top start; template mask warped back."""
    import ants

    res = 3.0
    with ants_session(seed, omp_nthreads), tempfile.TemporaryDirectory(prefix="tbet") as tmp:
        head = resample_to_spacing(to_ants(t1, np.nan_to_num(np.asarray(t1.dataobj,
                                                                          dtype=np.float32))),
                                   res, "linear")
        hv = head.numpy()
        # clip the bright fat so the brain's contrast dominates the MI histogram
        hi = float(np.percentile(hv[hv > 0], 99)) if np.any(hv > 0) else 1.0
        head = head.new_image_like(np.clip(hv, 0.0, hi) / hi)
        tmpl_img = resources.load_template("T1w")
        fixed = resample_to_spacing(to_ants(tmpl_img), res, "linear")
        tmask = resample_to_spacing(to_ants(resources.load_template("mask")), res, "nearest")
        metric_mask = ants.iMath(tmask, "MD", 3)  # 9 mm: keeps the brain edge in the metric
        # translation start: template brain centre -> head-top estimate of the brain centre
        t_mask = np.asarray(resources.load_template("mask").dataobj) > 0
        t_centre = nib.affines.apply_affine(tmpl_img.affine, np.argwhere(t_mask).mean(axis=0))
        start = np.eye(4)
        start[:3, 3] = _head_top_start(hv, ants_affine(head)) + offset_mm - t_centre
        init = str(Path(tmp) / "init.mat")
        ants.write_transform(ras_to_ants_transform(start), init)
        linear = dict(mask=metric_mask, mask_all_stages=True, aff_iterations=(1000, 500, 200),
                      aff_shrink_factors=(4, 2, 1), aff_smoothing_sigmas=(2, 1, 0))
        # rigid first: started straight from a translation, the affine's scales sometimes run
        # off (Dice 0.67 for 3 of 6 seeds on a 3 mm phantom); after a rigid stage never
        rigid = ants.registration(fixed, head, "Rigid", initial_transform=[init],
                                  outprefix=str(Path(tmp) / "rig_"), **linear)
        aff = ants.registration(fixed, head, "Affine", initial_transform=rigid["fwdtransforms"],
                                outprefix=str(Path(tmp) / "aff_"), **linear)
        syn = ants.registration(fixed, head, "SyNOnly", initial_transform=aff["fwdtransforms"],
                                outprefix=str(Path(tmp) / "syn_"), mask=metric_mask,
                                reg_iterations=(40, 20, 0))
        warped = ants.apply_transforms(to_ants(t1), to_ants(resources.load_template("mask")),
                                       syn["invtransforms"], whichtoinvert=[True, False],
                                       interpolator="linear")
        mask = warped.numpy() >= 0.5
    return ndimage.binary_fill_holes(_largest_component(mask))


def neighbour_correlation(data: np.ndarray, mask: np.ndarray) -> float:
    """The highest, over the three axes, correlation of the values of neighbouring voxels
    inside ``mask`` (NaN where the image is constant there)."""
    found = []
    for axis in range(3):
        lo, hi = [slice(None)] * 3, [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        both = mask[tuple(lo)] & mask[tuple(hi)]
        x = data[tuple(lo)][both].astype(np.float64)
        y = data[tuple(hi)][both].astype(np.float64)
        if x.size > 1 and x.std() > 0 and y.std() > 0:
            found.append(float(np.corrcoef(x, y)[0, 1]))
    return max(found) if found else float("nan")


def brain_mask(t1: nib.Nifti1Image, method: str = "deepbet", omp_nthreads: int = 1
               ) -> nib.Nifti1Image:
    """Brain mask of a raw-head T1w.

    Parameters
    ----------
    t1
        T1w head (RAS orientation, float32), scalp and skull present.
    method
        ``deepbet`` (default; chosen by the benchmark in ``docs/skullstrip.md``) or
        ``template``.
    omp_nthreads
        Threads for torch (deepbet) and ITK (template).

    Returns
    -------
    nib.Nifti1Image
        uint8 mask (1 = brain, including sulcal and ventricular CSF) on the T1w grid.

    Raises
    ------
    ValueError
        Unknown method or a non-3D image.
    DataError
        No brain found: an empty result, or one that holds noise
        (:func:`neighbour_correlation`).
    """
    if method not in METHODS:
        raise ValueError(f"unknown brain-mask method {method!r}; choose from {METHODS}")
    if len(t1.shape) != 3:
        raise ValueError(f"brain_mask needs a 3D T1w, got shape {t1.shape}")
    if method == "deepbet":
        mask = _deepbet(t1, omp_nthreads)
    else:
        mask = _template_mask(t1, omp_nthreads)
    other = "template" if method == "deepbet" else "deepbet"
    if not mask.any():
        raise DataError(f"brain mask ({method}): found no brain in the T1w", role="t1w",
                        fix=NO_BRAIN_FIX + other)
    r = neighbour_correlation(np.nan_to_num(np.asarray(t1.dataobj, dtype=np.float32)), mask)
    if r < MIN_NEIGHBOUR_CORRELATION:
        raise DataError(f"brain mask ({method}): found no brain in the T1w, only noise "
                        f"(neighbouring voxels inside the outlined brain correlate at r = "
                        f"{r:.2f} < {MIN_NEIGHBOUR_CORRELATION})", role="t1w",
                        fix=NO_BRAIN_FIX + other)
    out = nib.Nifti1Image(mask.astype(np.uint8), t1.affine)
    out.header.set_data_dtype(np.uint8)
    return out
