"""Image intake: read a NIfTI fully once, check it, orient it to RAS, collapse PET frames.

Every failure raises :class:`~pseudopet_bids.errors.ImageError` naming the file and the fix.
The user's file is only read, never modified (the data are copied into a new image).

q/sform rule
    nibabel's ``get_best_affine`` order is used: the sform when its code is > 0, else the qform
    when its code is > 0, else the fall-back (voxel sizes only), which we refuse because the image
    would have no position in space. When both codes are set and the two disagree by more than
    1 mm anywhere in the field of view, the sform wins (it is what SPM/ANTs/FSL write last) and a
    warning names the file. A singular or non-finite affine is refused.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np

from pseudopet_bids.errors import ImageError

LOGGER = logging.getLogger(__name__)


def _corners(shape: Sequence[int]) -> np.ndarray:
    ii, jj, kk = np.meshgrid(*[[0, max(int(n) - 1, 0)] for n in shape[:3]], indexing="ij")
    return np.c_[ii.ravel(), jj.ravel(), kk.ravel(), np.ones(8)]


def choose_affine(img: nib.Nifti1Image, path: Path) -> np.ndarray:
    """Pick and check the voxel→scanner affine of an image (see module docstring).

    Parameters
    ----------
    img
        Image as loaded by nibabel.
    path
        File name used in messages.

    Returns
    -------
    numpy.ndarray
        4×4 affine.
    """
    hdr = img.header
    sform, scode = hdr.get_sform(coded=True)
    qform, qcode = hdr.get_qform(coded=True)
    if scode and scode > 0:
        affine = sform
        if qcode and qcode > 0 and qform is not None:
            corners = _corners(img.shape)
            gap = np.abs((corners @ sform.T) - (corners @ qform.T))[:, :3].max()
            if gap > 1.0:
                LOGGER.warning("%s: sform and qform disagree by up to %.1f mm; using the sform",
                               path, gap)
    elif qcode and qcode > 0:
        affine = qform
    else:
        raise ImageError("the header has neither a valid sform nor qform (both codes are 0), "
                         "so the image has no position in space", path,
                         "rewrite the header with a scanner/aligned transform "
                         "(e.g. re-export it from DICOM with dcm2niix)")
    affine = np.asarray(affine, dtype=float)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-6:
        raise ImageError("the header affine is singular or not finite", path,
                         "fix the image header (re-export it from DICOM)")
    return affine


def _read_array(img: nib.Nifti1Image, path: Path) -> np.ndarray:
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise ImageError(f"the file is truncated or corrupt ({type(exc).__name__}: {exc})", path,
                         "re-copy or re-export the file; check that the download finished "
                         "(datalad/git-annex: 'datalad get')") from exc
    return data


def load_image(path: str | Path, kind: str = "image", ndim: tuple[int, ...] = (3,)
               ) -> nib.Nifti1Image:
    """Read a NIfTI image fully, check it and return it in RAS+ orientation (float32).

    Parameters
    ----------
    path
        ``.nii`` or ``.nii.gz`` file.
    kind
        What the image is (``T1w``, ``PET``), used in messages.
    ndim
        Accepted numbers of dimensions (trailing singleton dimensions are squeezed first).

    Returns
    -------
    nibabel.Nifti1Image
        New in-memory image; the file is not touched.

    Raises
    ------
    ImageError
        Missing, empty, unreadable, truncated, wrong dimensionality, empty or non-finite data.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{kind} file does not exist (broken symlink?)", path,
                         "fetch the file content (e.g. 'datalad get') or remove the entry")
    if path.stat().st_size == 0:
        raise ImageError(f"{kind} file is empty (0 bytes)", path,
                         "replace it with the real image")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for non-NIfTI content
        raise ImageError(f"cannot read the {kind} as NIfTI ({type(exc).__name__}: {exc})", path,
                         "check that the file is a NIfTI-1/2 image (not an HTML page or a "
                         "placeholder) and re-export it") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ImageError(f"{kind} is not a NIfTI image", path, "convert it to NIfTI")
    affine = choose_affine(img, path)
    data = _read_array(img, path)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim not in ndim:
        raise ImageError(f"{kind} has {data.ndim} dimensions {data.shape}; expected "
                         f"{' or '.join(str(n) for n in ndim)}D", path,
                         "give a 3D image (PET may be 4D with one volume per frame)")
    if min(data.shape[:3]) < 2:
        raise ImageError(f"{kind} is too small ({data.shape})", path, "give a full 3D volume")
    finite = np.isfinite(data)
    if not finite.all():
        bad = int((~finite).sum())
        raise ImageError(f"{kind} contains {bad} non-finite (NaN/inf) voxels", path,
                         "re-export the image without NaN/inf (e.g. replace them with 0)")
    if not np.any(data):
        raise ImageError(f"{kind} contains only zeros", path, "give the real image")
    if float(data.max()) == float(data.min()):
        raise ImageError(f"{kind} is constant ({float(data.max())})", path, "give the real image")
    out = nib.Nifti1Image(data, affine)
    out.header.set_xyzt_units("mm", "sec")
    ras = nib.as_closest_canonical(out)
    return nib.Nifti1Image(np.asarray(ras.dataobj, dtype=np.float32), ras.affine)


def combine_frames(img: nib.Nifti1Image, durations: Sequence[float] | None, path: str | Path
                   ) -> tuple[nib.Nifti1Image, dict]:
    """Collapse a 4D PET into one static image by a ``FrameDuration``-weighted mean.

    A frame's voxel value is an average activity concentration over the frame, so the
    duration-weighted mean is the average concentration over the whole acquisition (what a
    static scan of the same window would show). All frames are used; a 3D image passes through.

    Parameters
    ----------
    img
        3D or 4D PET (RAS, float32).
    durations
        ``FrameDuration`` from the sidecar (seconds), one per frame; may be None for 3D.
    path
        PET file, for messages.

    Returns
    -------
    tuple
        The 3D image and a dict describing what was done (for sidecars).
    """
    path = Path(path)
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim == 3:
        return img, {"FramesCombined": 1, "FrameCombination": "none (static image)"}
    n_frames = data.shape[3]
    if durations is None:
        raise ImageError(f"4D PET with {n_frames} frames but no FrameDuration in its sidecar",
                         path, "add FrameDuration (seconds per frame) to the JSON sidecar")
    weights = np.asarray(durations, dtype=float).ravel()
    if weights.size != n_frames:
        raise ImageError(f"the image has {n_frames} frames but FrameDuration lists "
                         f"{weights.size}", path,
                         "make FrameDuration in the sidecar match the frames of the image")
    if not np.all(np.isfinite(weights)) or np.any(weights <= 0):
        raise ImageError("FrameDuration has non-positive or non-finite entries", path,
                         "fix FrameDuration in the sidecar")
    static = np.tensordot(data, weights / weights.sum(), axes=([3], [0])).astype(np.float32)
    info = {"FramesCombined": int(n_frames),
            "FrameCombination": "FrameDuration-weighted mean of all frames"}
    return nib.Nifti1Image(static, img.affine), info


def load_static_pet(path: str | Path, durations: Sequence[float] | None
                    ) -> tuple[nib.Nifti1Image, dict]:
    """Read a 3D or 4D PET (:func:`load_image`) and make it static (:func:`combine_frames`)."""
    return combine_frames(load_image(path, "PET", ndim=(3, 4)), durations, path)
