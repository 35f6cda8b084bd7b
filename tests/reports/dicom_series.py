"""A synthetic T1w DICOM series (MR Image Storage, one file per slice) and the NIfTI geometry it
converts to, for the DICOM export tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def head(shape=(20, 16, 12), seed: int = 0) -> np.ndarray:
    """A bright ellipsoid with texture, indexed (column, row, slice)."""
    rng = np.random.default_rng(seed)
    ii, jj, kk = np.indices(shape)
    c = (np.asarray(shape) - 1) / 2
    r = np.sqrt(((ii - c[0]) / (0.45 * shape[0])) ** 2 + ((jj - c[1]) / (0.45 * shape[1])) ** 2
                + ((kk - c[2]) / (0.45 * shape[2])) ** 2)
    return np.where(r < 1, 400 + 200 * rng.random(shape), 0).astype(np.uint16)


def series_affine(orientation, spacing, first, step) -> np.ndarray:
    """RAS affine of voxel (column, row, slice), written out from PS3.3 C.7.6.2.1.1."""
    row_dir, col_dir = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * spacing[1]
    lps[:3, 1] = col_dir * spacing[0]
    lps[:3, 2] = np.asarray(step, float)
    lps[:3, 3] = first
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def write_series(folder: Path, volume: np.ndarray, *, orientation=(1, 0, 0, 0, 1, 0),
                 spacing=(1.2, 1.1), thickness=1.5, first=(-11.0, -9.0, -8.0),
                 patient="PAT001", series_uid: str | None = None, study_uid: str | None = None,
                 description="T1w MPRAGE", series_number=3) -> np.ndarray:
    """Write ``volume`` (column, row, slice) as slices, shuffled file names; returns the RAS
    affine of the volume."""
    folder.mkdir(parents=True, exist_ok=True)
    row_dir, col_dir = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    step = np.cross(row_dir, col_dir) * thickness
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid(entropy_srcs=[patient])
    frame_uid = generate_uid(entropy_srcs=[patient, "frame"])
    order = np.random.default_rng(1).permutation(volume.shape[2])
    for k in range(volume.shape[2]):
        ds = Dataset()
        ds.SOPClassUID = MR_STORAGE
        ds.SOPInstanceUID = generate_uid()
        ds.PatientName, ds.PatientID = f"Test^{patient}", patient
        ds.PatientBirthDate, ds.PatientSex = "19800101", "F"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240101", "120000", "1", "A1"
        ds.ReferringPhysicianName = ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", series_number, k + 1
        ds.SeriesDescription = description
        ds.Manufacturer = "Synthetic"
        ds.PositionReferenceIndicator = ""
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.ImagePositionPatient = [float(v) for v in np.asarray(first) + k * step]
        ds.PixelSpacing = [float(v) for v in spacing]
        ds.SliceThickness = thickness
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "GR", "NONE", ""
        ds.MRAcquisitionType, ds.EchoTime, ds.RepetitionTime = "3D", 3.0, 2000.0
        ds.EchoTrainLength, ds.AcquisitionNumber = 1, 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.ascontiguousarray(volume[:, :, k].T).astype(np.uint16).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MR_STORAGE, \
            ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        pydicom.dcmwrite(folder / f"IM{order[k]:04d}", ds, enforce_file_format=True)
    return series_affine(orientation, spacing, first, step)


def write_series_from_nifti(path: Path, folder: Path, patient: str) -> None:
    """Write a NIfTI image as the DICOM series it could have been converted from (values
    scaled to 0..4000; slices ordered along the row x column normal)."""
    import nibabel as nib

    img = nib.load(path)
    data = np.asarray(img.dataobj, dtype=np.float32)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine
    row = lps[:3, 0] / np.linalg.norm(lps[:3, 0])
    col = lps[:3, 1] / np.linalg.norm(lps[:3, 1])
    if np.dot(np.cross(row, col), lps[:3, 2]) < 0:  # slices must run along row x column
        data = data[:, :, ::-1]
        lps[:3, 3] += lps[:3, 2] * (data.shape[2] - 1)
        lps[:3, 2] *= -1
    scaled = np.clip(data / max(float(data.max()), 1e-6) * 4000, 0, 65535).astype(np.uint16)
    write_series(folder, scaled, orientation=(*row, *col),
                 spacing=(float(np.linalg.norm(lps[:3, 1])), float(np.linalg.norm(lps[:3, 0]))),
                 thickness=float(np.linalg.norm(lps[:3, 2])), first=tuple(lps[:3, 3]),
                 patient=patient)
