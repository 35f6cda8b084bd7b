"""``--dicom-reference`` at the command line: a bad folder stops the run before any output
(exit 66, the folder and the fix named); a good one passes the pre-flight check."""

from __future__ import annotations

import numpy as np
import pytest

from pseudopet_bids.bids.discovery import discover
from pseudopet_bids.cli.parser import build_config, build_parser
from pseudopet_bids.cli.run import main
from pseudopet_bids.workflows.clinical import check_references
from tests.conftest import blob, make_bids
from tests.reports.dicom_series import write_series

#: The conftest images: 2 mm voxels, origin 0, RAS; as DICOM (LPS) rows run to -x, columns
#: to -y, slices to +z.
GEOMETRY = {"orientation": (-1, 0, 0, 0, -1, 0), "spacing": (2.0, 2.0), "thickness": 2.0,
            "first": (0.0, 0.0, 0.0)}


def series_of(folder, volume=None, **changes):
    data = blob() if volume is None else volume
    write_series(folder, (data * 100).astype(np.uint16), **{**GEOMETRY, **changes})


def run(root, out, ref, *extra):
    return main([str(root), str(out), "participant", "--skip-bids-validation", "--dicom-export",
                 "--dicom-reference", str(ref), *extra])


def test_good_reference_passes_the_check(tmp_path):
    root = make_bids(tmp_path / "ds", {"01": {}, "02": {}})
    for label in ("01", "02"):
        series_of(tmp_path / "ref" / f"sub-{label}")
    args = build_parser().parse_args([str(root), str(tmp_path / "o"), "participant",
                                      "--dicom-export", "--dicom-reference",
                                      str(tmp_path / "ref")])
    cfg = build_config(args)
    check_references(cfg, [u for u in discover(root) if u.runnable])


@pytest.mark.parametrize("case, message", [
    ("not-dicom", "no DICOM image"),
    ("two-series", "2 DICOM series"),
    ("geometry", "another geometry"),
    ("patient", "another patient's"),
    ("no-subject-folder", "no sub-01 folder"),
])
def test_bad_reference_exit_66_nothing_written(tmp_path, caplog, case, message):
    subjects = {"01": {}, "02": {}} if case == "no-subject-folder" else {"01": {}}
    root = make_bids(tmp_path / "ds", subjects)
    ref = tmp_path / "ref"
    folder = ref / "sub-01"
    if case == "not-dicom":
        folder.mkdir(parents=True)
        (folder / "scan.nii.gz").write_bytes(b"\x1f\x8b not dicom")
    elif case == "two-series":
        series_of(folder / "t1")
        series_of(folder / "t2", description="T2w", series_number=5)
    elif case == "geometry":
        series_of(folder, first=(0.0, 0.0, 4.0))
    elif case == "patient":
        other = np.roll(blob(), 5, axis=0) + np.random.default_rng(2).random(blob().shape) * 40
        series_of(folder, other, patient="SOMEONE-ELSE")
    else:
        series_of(ref)  # DIR itself holds one series, but two participants are processed
        folder = ref
    out = tmp_path / "out"
    assert run(root, out, ref) == 66
    assert message in caplog.text and str(folder) in caplog.text
    assert not out.exists()


def test_reference_needs_export(tmp_path):
    root = make_bids(tmp_path / "ds", {"01": {}})
    with pytest.raises(SystemExit) as info:
        main([str(root), str(tmp_path / "o"), "participant", "--dicom-reference",
              str(tmp_path)])
    assert info.value.code == 64
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_participant_writes_pdf_and_dicom(tmp_path):
    """A simulated patient end to end: the PDF, the secondary captures, the Encapsulated PDF,
    and the SEG and Parametric Map on a DICOM series of its T1w; the output stays valid BIDS."""
    import pydicom

    from pseudopet_bids.simulate.cohort import simulate_cohort
    from tests.conftest import assert_bids_valid
    from tests.reports.dicom_series import write_series_from_nifti
    from tests.reports.test_dicom_export import validate

    bids = tmp_path / "bids"
    simulate_cohort(bids, n_controls=0, n_patients=1, seed=11, t1_voxel_mm=2.0)
    t1 = next(bids.glob("sub-P01/anat/*_T1w.nii.gz"))
    write_series_from_nifti(t1, tmp_path / "ref" / "sub-P01", "P01")
    out = tmp_path / "out"
    assert run(bids, out, tmp_path / "ref", "--model", "tissue", "--omp-nthreads", "1",
               "--image-convention", "neurological") == 0
    pdf = next(out.glob("sub-P01/report/sub-P01_*_desc-tissue_report.pdf"))
    assert pdf.read_bytes().startswith(b"%PDF")
    folder = next(out.glob("sub-P01/dicom/sub-P01_*_desc-tissue"))
    names = {p.name for p in folder.iterdir()}
    assert {"DOC_report.dcm", "PM_zmap.dcm", "SC_0001.dcm"} <= names
    doc = pydicom.dcmread(folder / "DOC_report.dcm")
    assert bytes(doc.EncapsulatedDocument)[:doc.EncapsulatedDocumentLength] == pdf.read_bytes()
    sc = pydicom.dcmread(folder / "SC_0001.dcm")
    assert list(sc.PatientOrientation) == ["R", "P"] and sc.PatientID == "P01"
    for name in ("SC_0001.dcm", "PM_zmap.dcm", "SEG_clusters.dcm"):
        if name in names:
            assert validate(folder / name) == [], name
    assert_bids_valid(out)
