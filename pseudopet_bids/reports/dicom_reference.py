"""``--dicom-reference``: the subject's original T1w DICOM series, read and checked against the
T1w the outputs are on, so that the DICOM SEG and Parametric Map can reference it.

Layout: ``DIR/sub-<L>/ses-<S>/``, ``DIR/sub-<L>/`` or, when one participant is processed,
``DIR`` itself; each holds exactly one series (files at any depth; non-DICOM files such as a
``DICOMDIR`` index or notes are ignored).

Checks, each a :class:`~pseudopet_bids.errors.DicomReferenceError` (exit 66) naming the folder and the fix:
no DICOM image; several series; several patients; slices of one series that disagree
(orientation, matrix, spacing, missing slices); a grid that is not the T1w's (another
geometry: matrix, voxel size or position differ by more than :data:`GEOMETRY_TOLERANCE_MM`);
and images that are not the T1w's on the same grid (another patient's or another series with
the same protocol: correlation below :data:`MIN_CORRELATION`).

Geometry: DICOM positions are in LPS, NIfTI affines in RAS; the series' voxel grid (column,
row, slice) is given an RAS affine (:attr:`ReferenceSeries.affine`) and compared with the
T1w's after both are reoriented to the closest RAS axes (a pure permutation and flip, no
resampling: :func:`to_series_order` maps an array of the RAS T1w grid onto the series' frames).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from pseudopet_bids.errors import DicomReferenceError

#: Largest distance between the corners of the series' and the T1w's grids.
GEOMETRY_TOLERANCE_MM = 0.5
#: Smallest correlation between the series' and the T1w's voxel values on the same grid.
MIN_CORRELATION = 0.9
_RAS = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
__all__ = ["DicomReferenceError", "ReferenceSeries", "check_matches", "read_reference_series",
           "reference_folder", "to_series_order"]


@dataclass(frozen=True)
class ReferenceSeries:
    """One DICOM series, its slices in order along the slice normal.

    ``volume`` is indexed (column, row, slice) in the series' own order; ``affine`` maps
    those indices to RAS mm.
    """

    folder: Path
    datasets: tuple[Dataset, ...]
    volume: np.ndarray
    affine: np.ndarray

    @property
    def patient(self) -> str:
        return str(self.datasets[0].get("PatientID", ""))


def reference_folder(root: Path, subject: str, session: str | None) -> Path:
    """Where the series of a (subject, session) lives under ``root`` (see module docstring)."""
    candidates = [root / f"sub-{subject}" / f"ses-{session}"] if session else []
    candidates.append(root / f"sub-{subject}")
    for folder in candidates:
        if folder.is_dir():
            return folder
    return root


def _dicom_files(folder: Path) -> tuple[list[Dataset], list[Path]]:
    """The DICOM images under ``folder`` (pixel data read) and the files that are not DICOM."""
    images: list[Dataset] = []
    others: list[Path] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path)
        except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, AttributeError):
            others.append(path)
            continue
        if "PixelData" in ds and "ImagePositionPatient" in ds:
            images.append(ds)
    return images, others


def read_reference_series(folder: Path, subject: str) -> ReferenceSeries:
    """Read and check the one T1w series of ``folder`` (see module docstring).

    Raises
    ------
    DicomReferenceError
        The folder is missing, holds no DICOM image, several series or patients, or slices
        that do not form one regular volume.
    """
    fix_one = (f"put the original T1w DICOM series of sub-{subject} (only that series) in "
               "--dicom-reference DIR/sub-<label>/ (or DIR/sub-<label>/ses-<label>/)")
    if not folder.is_dir():
        raise DicomReferenceError("the --dicom-reference folder does not exist", folder, fix_one)
    images, others = _dicom_files(folder)
    if not images:
        what = (f"{len(others)} file(s), none of them a DICOM image (e.g. {others[0].name})"
                if others else "no file")
        raise DicomReferenceError(f"no DICOM image in the --dicom-reference folder: {what}",
                                  folder, fix_one)
    series = Counter(str(ds.get("SeriesInstanceUID", "")) for ds in images)
    if len(series) > 1:
        names = sorted({f"#{ds.get('SeriesNumber', '?')} "
                        f"{ds.get('SeriesDescription', '') or '(no description)'}"
                        for ds in images})
        raise DicomReferenceError(
            f"{len(series)} DICOM series in the --dicom-reference folder ({'; '.join(names)}); "
            "the export needs the one the T1w was converted from", folder,
            "move the other series out of the folder, or give one folder per series and point "
            "to the T1w's")
    patients = sorted({str(ds.get("PatientID", "")) for ds in images})
    if len(patients) > 1:
        raise DicomReferenceError(f"images of several patients ({', '.join(patients)}) in the "
                                  "--dicom-reference folder", folder, fix_one)
    return _assemble(folder, images)


def _assemble(folder: Path, images: list[Dataset]) -> ReferenceSeries:
    """Sort the slices and build the volume and its RAS affine."""
    first = images[0]
    fix = ("give the complete, unmodified T1w series (one 2-D image per slice, as exported "
           "from the scanner or PACS)")
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in images):
        raise DicomReferenceError("the series is a multi-frame (enhanced) DICOM; the export "
                                  "needs one image per slice", folder, fix)
    orient = np.asarray(first.ImageOrientationPatient, dtype=float)
    spacing = np.asarray(first.PixelSpacing, dtype=float)  # (between rows, between columns)
    for ds in images:
        if (not np.allclose(np.asarray(ds.ImageOrientationPatient, float), orient, atol=1e-4)
                or (ds.Rows, ds.Columns) != (first.Rows, first.Columns)
                or not np.allclose(np.asarray(ds.PixelSpacing, float), spacing, atol=1e-4)):
            raise DicomReferenceError("the slices of the series differ in orientation, matrix "
                                      "or pixel spacing", folder, fix)
    row_dir, col_dir = orient[:3], orient[3:]
    normal = np.cross(row_dir, col_dir)
    images = sorted(images, key=lambda ds: float(np.dot(np.asarray(
        ds.ImagePositionPatient, float), normal)))
    positions = np.array([np.asarray(ds.ImagePositionPatient, float) for ds in images])
    if len(images) > 1:
        steps = np.diff(positions, axis=0)
        gaps = steps @ normal
        if gaps.min() < 1e-3 or not np.allclose(steps, steps.mean(axis=0), atol=0.05):
            raise DicomReferenceError(
                f"the {len(images)} slices are not evenly spaced (spacing from {gaps.min():.2f} "
                f"to {gaps.max():.2f} mm: a slice missing or duplicated?)", folder, fix)
        slice_step = steps.mean(axis=0)
    else:
        thickness = float(first.get("SliceThickness", 1.0) or 1.0)
        slice_step = normal * thickness
    lps = np.eye(4)
    lps[:3, 0] = row_dir * spacing[1]  # along a row: the column index grows
    lps[:3, 1] = col_dir * spacing[0]
    lps[:3, 2] = slice_step
    lps[:3, 3] = positions[0]
    frames = []
    for ds in images:
        pixels = ds.pixel_array.astype(np.float32)
        frames.append(pixels * float(ds.get("RescaleSlope", 1) or 1)
                      + float(ds.get("RescaleIntercept", 0) or 0))
    volume = np.stack(frames, axis=-1).transpose(1, 0, 2)  # (column, row, slice)
    return ReferenceSeries(folder, tuple(images), volume, _LPS_TO_RAS @ lps)


def _ras(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ornt = nib.orientations.io_orientation(affine)
    return (nib.orientations.apply_orientation(data, ornt),
            affine @ nib.orientations.inv_ornt_aff(ornt, data.shape))


def _corners(shape: Sequence[int]) -> np.ndarray:
    return np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                     for k in (0, shape[2] - 1)])


def check_matches(series: ReferenceSeries, t1: np.ndarray, t1_affine: np.ndarray) -> None:
    """Refuse a series whose grid or images are not those of the T1w (``t1``: any
    orientation, with its RAS affine).

    Raises
    ------
    DicomReferenceError
        Another geometry, or another patient's or series' images on the same grid.
    """
    fix = ("give the DICOM series this T1w NIfTI was converted from (same patient, same "
           "acquisition, unmodified)")
    ref, ref_affine = _ras(series.volume, series.affine)
    img, img_affine = _ras(np.asarray(t1, dtype=np.float32), t1_affine)
    if ref.shape != img.shape:
        raise DicomReferenceError(f"the series' grid {ref.shape} (after reorientation) is not "
                                  f"the T1w's {img.shape}: another geometry", series.folder, fix)
    corners = _corners(ref.shape)
    gap = float(np.abs(corners @ ref_affine.T - corners @ img_affine.T)[:, :3].max())
    if gap > GEOMETRY_TOLERANCE_MM:
        raise DicomReferenceError(f"the series' voxels lie up to {gap:.1f} mm from the T1w's "
                                  "(different position, orientation or voxel size): another "
                                  "geometry", series.folder, fix)
    both = (ref != 0) | (img != 0)
    step = max(1, int(both.sum()) // 200_000)  # a sample of the voxels decides as well
    r = float(np.corrcoef(ref[both][::step], img[both][::step])[0, 1]) if both.sum() > 2 else 0.0
    if not np.isfinite(r) or r < MIN_CORRELATION:
        raise DicomReferenceError(
            f"the series' images are not the T1w's (correlation {r:.2f} on the same grid; "
            f"patient {series.patient or 'unnamed'}): another patient's or another series",
            series.folder, fix)


def to_series_order(ras_data: np.ndarray, series: ReferenceSeries) -> np.ndarray:
    """An array of the (closest-)RAS T1w grid as the series' frames: (slice, row, column)."""
    ornt = nib.orientations.io_orientation(series.affine)
    back = nib.orientations.ornt_transform(_RAS, ornt)
    native = nib.orientations.apply_orientation(ras_data, back)  # (column, row, slice)
    return np.ascontiguousarray(native.transpose(2, 1, 0))
