"""Image intake: read a NIfTI fully once, check it, orient it to RAS, collapse PET frames.

Every failure raises :class:`~pseudopet_bids.errors.ImageError` naming the file and the fix.
The user's file is only read, never modified (the data are copied into a new image).

q/sform rule
    nibabel's ``get_best_affine`` order is used: the sform when its code is > 0, else the qform
    when its code is > 0, else the fall-back (voxel sizes only), which we refuse because the image
    would have no position in space. When both codes are set and the two disagree by more than
    1 mm anywhere in the field of view, the sform wins (it is what SPM/ANTs/FSL write last) and a
    warning names the file. An unusable sform (singular, not finite, or sheared by more than 1 mm
    across the field of view: ITK/ANTs directions must be orthonormal, so ANTs would silently
    place the image elsewhere than nibabel) gives way to a valid qform with a warning; with no
    usable transform at all the image is refused.

Integrity
    A ``.nii.gz`` is decompressed to its end, so that the gzip CRC and length are verified: a
    flipped bit inside the compressed data otherwise decodes into silently wrong voxels, because
    nibabel stops reading after the last voxel, before the checksum. Unreadable files are
    described by what they are (empty, an HTML page, a git-annex or Git LFS pointer, an
    uncompressed NIfTI named ``.nii.gz`` ...), see :func:`describe_unreadable`.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path
from typing import Any, Sequence

import nibabel as nib
import numpy as np

from pseudopet_bids.errors import ImageError

LOGGER = logging.getLogger(__name__)
#: Largest disagreement (mm over the field of view) tolerated between two descriptions of a grid.
GEOMETRY_TOLERANCE_MM = 1.0
_NIFTI_MAGIC = (b"n+1\x00", b"ni1\x00")  # NIfTI-1 magic at byte 344
_FETCH = "fetch its content ('datalad get' or 'git annex get' on this file), or re-download it"


def _corners(shape: Sequence[int]) -> np.ndarray:
    shape = (list(shape[:3]) + [1, 1, 1])[:3]  # 2D images: their grid is one slice
    ii, jj, kk = np.meshgrid(*[[0, max(int(n) - 1, 0)] for n in shape], indexing="ij")
    return np.c_[ii.ravel(), jj.ravel(), kk.ravel(), np.ones(8)]


def describe_unreadable(path: str | Path) -> tuple[str, str] | None:
    """What a file that cannot be an image is, and the fix, from its first bytes.

    Real datasets hold such files: failed downloads saved as HTML pages, git-annex/DataLad
    placeholders whose content was never fetched, Git LFS pointers, 1-byte placeholders
    (bids-examples), uncompressed images named ``.nii.gz``.

    Parameters
    ----------
    path
        The file (it may be a broken symbolic link).

    Returns
    -------
    tuple of str or None
        ``(problem, fix)``, or None when nothing is recognisably wrong (the caller then reports
        the reader's own error).
    """
    path = Path(path)
    if not path.exists():
        if path.is_symlink():
            return ("is a broken symbolic link: the file content is not present (a "
                    "DataLad/git-annex dataset not fetched?)", _FETCH)
        return "does not exist", "check the path"
    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes)", "replace it with the real image (re-export or re-download)"
    with open(path, "rb") as fh:
        head = fh.read(1024)
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return ("is an HTML/XML page, not an image (a failed download?)",
                "download the file itself again (not the web page that links to it)")
    if text.startswith(b"version https://git-lfs"):
        return "is a Git LFS pointer, not the image", "run 'git lfs pull' in the dataset"
    if b"annex/objects/" in head and size < 1024:
        return "is a git-annex pointer file: the content is not present", _FETCH
    gz = path.name.endswith(".gz")
    if gz and head[:2] != b"\x1f\x8b":
        if head[344:348] in _NIFTI_MAGIC:
            return ("is an uncompressed NIfTI although its name ends in .gz",
                    "rename it to .nii, or compress it (gzip)")
        return ("is not gzip-compressed although its name ends in .nii.gz",
                "replace it with the real image (re-export or re-download)")
    if not gz and size < 348:
        return (f"is too short to be a NIfTI image ({size} bytes; a placeholder?)",
                "replace it with the real image")
    return None


def _orthogonal(affine: np.ndarray) -> np.ndarray:
    """The affine ANTs/ITK would use: directions projected onto the nearest rotation."""
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    u, _, vt = np.linalg.svd(affine[:3, :3] / zooms)
    out = affine.copy()
    out[:3, :3] = (u @ vt) * zooms
    return out


def _affine_problem(affine: np.ndarray | None, shape: Sequence[int]) -> str | None:
    """Why an affine cannot place the image in space, or None."""
    if affine is None:
        return "missing"
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-6:
        return "singular or not finite"
    corners = _corners(shape)
    shear = np.abs(corners @ (affine - _orthogonal(affine)).T)[:, :3].max()
    if shear > GEOMETRY_TOLERANCE_MM:
        return (f"sheared (non-orthogonal axes, up to {shear:.1f} mm across the image, e.g. a "
                "gantry tilt), which ANTs cannot represent")
    return None


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
    if not (scode and scode > 0) and not (qcode and qcode > 0):
        raise ImageError("the header has neither a valid sform nor qform (both codes are 0), "
                         "so the image has no position in space", path,
                         "rewrite the header with a scanner/aligned transform "
                         "(e.g. re-export it from DICOM with dcm2niix)")
    coded = [(name, None if m is None else np.asarray(m, dtype=float))
             for name, m, code in (("sform", sform, scode), ("qform", qform, qcode))
             if code and code > 0]
    problems = {name: _affine_problem(m, img.shape) for name, m in coded}
    usable = [(name, m) for name, m in coded if m is not None and problems[name] is None]
    if not usable:
        text = "; ".join(f"the {name} is {problems[name]}" for name, _ in coded)
        raise ImageError(f"no usable header transform: {text}", path,
                         "fix the image header (re-export it from DICOM with dcm2niix, or "
                         "resample it to an orthogonal grid)")
    name, affine = usable[0]
    if name == "qform" and "sform" in problems:  # the sform was set but unusable
        LOGGER.warning("%s: the sform is %s; using the qform instead", path, problems["sform"])
    elif len(usable) == 2:
        corners = _corners(img.shape)
        gap = np.abs((corners @ usable[0][1].T) - (corners @ usable[1][1].T))[:, :3].max()
        if gap > GEOMETRY_TOLERANCE_MM:
            LOGGER.warning("%s: sform and qform disagree by up to %.1f mm; using the sform",
                           path, gap)
    return affine


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (nibabel's messages span lines; log lines must not)."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]


def _verified(img: nib.Nifti1Image, path: Path) -> nib.Nifti1Image:
    """The image re-read from the whole decompressed file (gzip CRC and length checked)."""
    if not path.name.endswith(".gz"):
        return img
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (EOFError, OSError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise ImageError(f"the file is truncated or corrupt ({_one_line(exc)})", path,
                         "re-copy or re-export the file; check that the download finished "
                         "(datalad/git-annex: 'datalad get')") from exc
    return type(img).from_bytes(raw)


def _read_array(img: nib.Nifti1Image, path: Path) -> np.ndarray:
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below
            data = np.asarray(img.dataobj, dtype=np.float32)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise ImageError(f"the file is truncated or corrupt ({_one_line(exc)})", path,
                         "re-copy or re-export the file; check that the download finished "
                         "(datalad/git-annex: 'datalad get')") from exc
    return data


def _check_values(data: np.ndarray, img: nib.Nifti1Image, kind: str, path: Path,
                  require_positive: bool) -> None:
    """Refuse arrays no method can use (see :func:`load_image`)."""
    finite = np.isfinite(data)
    if not finite.all():
        bad = int((~finite).sum())
        with np.errstate(over="ignore", invalid="ignore"):
            stored = np.asarray(img.dataobj, dtype=np.float64)
        if np.isfinite(stored).all():  # finite on disk: the float32 conversion overflowed
            raise ImageError(f"{kind} has {bad} value(s) beyond the float32 range (up to "
                             f"{np.abs(stored).max():.3g})", path,
                             "rescale the image (e.g. to Bq/mL or kBq/mL) and save it again")
        raise ImageError(f"{kind} contains {bad} non-finite (NaN/inf) voxels", path,
                         "re-export the image without NaN/inf (e.g. replace them with 0)")
    if not np.any(data):
        raise ImageError(f"{kind} contains only zeros", path, "give the real image")
    if float(data.max()) == float(data.min()):
        raise ImageError(f"{kind} is constant ({float(data.max())})", path, "give the real image")
    if require_positive:
        # reconstruction noise leaves some negative voxels in every PET; a PET whose negative
        # mass outweighs its positive mass has its sign inverted or is not an uptake image.
        # A strided sample of at most ~4 M voxels decides it (a dynamic PET has 10^9).
        sample = data.ravel(order="K")[::max(1, data.size // 4_000_000)].astype(np.float64)
        if sample.clip(0, None).sum() <= -sample.clip(None, 0).sum():
            raise ImageError(f"{kind} is mostly negative (max {float(data.max()):.3g}): not an "
                             "uptake image, or its sign is inverted", path,
                             "give the reconstructed activity image (Bq/mL or SUV)")


def load_image(path: str | Path, kind: str = "image", ndim: tuple[int, ...] = (3,),
               require_positive: bool = False) -> nib.Nifti1Image:
    """Read a NIfTI image fully, check it and return it in RAS+ orientation (float32).

    Parameters
    ----------
    path
        ``.nii`` or ``.nii.gz`` file.
    kind
        What the image is (``T1w``, ``PET``), used in messages.
    ndim
        Accepted numbers of dimensions (trailing singleton dimensions are squeezed first).
    require_positive
        Refuse an image whose negative values outweigh its positive ones (PET uptake).

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
    known = describe_unreadable(path)
    if known is not None:
        raise ImageError(f"cannot read the {kind}: the file {known[0]}", path, known[1])
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for non-NIfTI content
        raise ImageError(f"cannot read the {kind} as NIfTI ({_one_line(exc)})", path,
                         "check that the file is a NIfTI-1/2 image (not an HTML page or a "
                         "placeholder) and re-export it") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ImageError(f"{kind} is not a NIfTI image", path, "convert it to NIfTI")
    affine = choose_affine(img, path)
    img = _verified(img, path)
    data = _read_array(img, path)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim not in ndim:
        raise ImageError(f"{kind} has {data.ndim} dimensions {data.shape}; expected "
                         f"{' or '.join(str(n) for n in ndim)}D", path,
                         "give a 3D image (PET may be 4D with one volume per frame)")
    if min(data.shape[:3]) < 2:
        raise ImageError(f"{kind} is too small ({data.shape})", path, "give a full 3D volume")
    _check_values(data, img, kind, path, require_positive)
    out = nib.Nifti1Image(data, affine)
    out.header.set_xyzt_units("mm", "sec")
    ras = nib.as_closest_canonical(out)
    return nib.Nifti1Image(np.asarray(ras.dataobj, dtype=np.float32), ras.affine)


def combine_frames(img: nib.Nifti1Image, durations: Sequence[float] | None, path: str | Path
                   ) -> tuple[nib.Nifti1Image, dict[str, Any]]:
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
                    ) -> tuple[nib.Nifti1Image, dict[str, Any]]:
    """Read a 3D or 4D PET (:func:`load_image`) and make it static (:func:`combine_frames`)."""
    return combine_frames(load_image(path, "PET", ndim=(3, 4), require_positive=True),
                          durations, path)
