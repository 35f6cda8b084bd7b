"""The clinical PDF report: page count, text (pdftotext), orientation labels, rendering."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from pseudopet_bids.reports import planes
from pseudopet_bids.reports.pdf_pages import ReportContext, ReportVolumes, report_pages
from pseudopet_bids.reports.pdf_report import pdf_bytes

needs_poppler = pytest.mark.skipif(
    shutil.which("pdftotext") is None or shutil.which("pdftoppm") is None,
    reason="pdftotext/pdftoppm missing: apt-get install poppler-utils")


def synthetic_volumes(shape=(24, 28, 22)) -> tuple[ReportVolumes, pd.DataFrame]:
    """A head-like T1w, PET with a left-sided defect, and the matching Z and cluster table."""
    rng = np.random.default_rng(0)
    ii, jj, kk = np.indices(shape)
    centre = (np.asarray(shape) - 1) / 2
    r = np.sqrt(((ii - centre[0]) / 10) ** 2 + ((jj - centre[1]) / 12) ** 2
                + ((kk - centre[2]) / 9) ** 2)
    t1 = np.where(r < 1, 100 + 10 * rng.standard_normal(shape), 0).astype(np.float32)
    pseudo = np.where(r < 1, 8.0, 0).astype(np.float32)
    defect = (r < 1) & (ii < centre[0] - 3) & (np.abs(jj - centre[1]) < 4) & (kk > centre[2])
    pet = np.where(defect, 5.0, pseudo).astype(np.float32)
    z = np.where(r < 1, np.where(defect, -3.5, 0.3), 0).astype(np.float32)
    labels = defect.astype(np.int16)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -centre * 2
    peak = affine @ np.append(np.argwhere(defect).mean(axis=0).round(), 1)
    table = pd.DataFrame([{
        "cluster_id": 1, "tier": "possible", "region": "left-parietal", "region_fraction": 0.9,
        "volume_mm3": defect.sum() * 8.0, "n_voxels": int(defect.sum()), "peak_zscore": -3.5,
        "mean_zscore": -3.5, "z_mass": 100.0, "p_corrected": 0.012, "p_method": "random-field",
        "asymmetry_index": -12.5, "asymmetry_z": float("nan"), "peak_x_mm": peak[0],
        "peak_y_mm": peak[1], "peak_z_mm": peak[2], "peak_template_x_mm": -40.0,
        "peak_template_y_mm": -3.0, "peak_template_z_mm": 50.0}])
    return ReportVolumes(t1, pet, pseudo, z, labels, affine), table


def context(table: pd.DataFrame, convention: str = "radiological") -> ReportContext:
    return ReportContext(
        subject="01", session=None, analysis="tissue", pet_name="sub-01_trc-FDG_pet.nii.gz",
        model_label="tissue", model_sha256="ab" * 32, z_reference="subject", table=table,
        group="patient", foci=("left-parietal",), convention=convention, pet_units="kBq/ml",
        settings={"z_threshold": 1.65, "cluster_min_volume_mm3": 1500.0},
        versions={"pseudopet": "0.1.0", "numpy": np.__version__},
        timings={"preprocessing": 12.5, "detection": 1.0})


def test_plane_orientation_and_edges():
    vol = np.zeros((5, 6, 7))
    vol[0, 5, 6] = 1  # patient's far left, anterior, superior
    rad = planes.plane(vol, "axial", 6, "radiological")
    neu = planes.plane(vol, "axial", 6, "neurological")
    assert rad.shape == (6, 5) and rad[0, -1] == 1  # top (anterior), right edge = patient left
    assert neu[0, 0] == 1
    assert planes.edges("axial", "radiological") == planes.Edges("R", "L", "A", "P")
    assert planes.edges("coronal", "neurological") == planes.Edges("L", "R", "S", "I")
    sag = planes.plane(vol, "sagittal", 0, "radiological")
    assert sag[0, 0] == 1 and planes.edges("sagittal", "radiological").left == "A"
    assert planes.pixel_aspect((1.0, 2.0, 3.0), "coronal") == 3.0
    with pytest.raises(ValueError):
        planes.edges("axial", "upside-down")


@needs_poppler
@pytest.mark.parametrize("convention", planes.CONVENTIONS)
def test_pdf_pages_and_text(tmp_path, convention):
    vol, table = synthetic_volumes()
    two = pd.concat([table, table.assign(cluster_id=2, tier="low", region="right-frontal")])
    ctx = context(two, convention)
    data = pdf_bytes(report_pages(ctx, vol), "test")
    assert data == pdf_bytes(report_pages(ctx, vol), "test")  # reproducible bytes
    pdf = tmp_path / "r.pdf"
    pdf.write_bytes(data)
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True)
    assert re.search(r"Pages:\s+5\n", info.stdout)  # intended use, summary, 2 clusters, provenance
    pages = [subprocess.run(["pdftotext", "-layout", "-f", str(n), "-l", str(n), str(pdf), "-"],
                            capture_output=True, text=True, check=True).stdout
             for n in range(1, 6)]
    assert "RESEARCH USE ONLY" in pages[0] and "cannot say" in pages[0]
    assert convention in pages[0]
    assert "Clinical focus (participants.tsv): left-parietal" in pages[1]
    assert "left-parietal" in pages[1] and "right-frontal" in pages[1]
    assert "Cluster 1: left-parietal (possible confidence)" in pages[2]
    assert "Corrected p: 0.012" in pages[2] and "-12.5 %" in pages[2]
    assert "Cluster 2: right-frontal" in pages[3]
    # every image of a cluster page says which side is which: 3 planes x 4 rows
    words = pages[2].split()
    assert all(words.count(letter) >= 8 for letter in "APSILR")
    assert "ab" * 32 in pages[4] and "preprocessing: 12.5" in pages[4]
    png = tmp_path / "page"
    subprocess.run(["pdftoppm", "-r", "40", "-png", "-f", "3", "-l", "3", str(pdf), str(png)],
                   check=True)
    assert any(tmp_path.glob("page*.png"))


@needs_poppler
def test_pdf_without_clusters(tmp_path):
    vol, table = synthetic_volumes()
    ctx = context(table.iloc[:0])
    pdf = tmp_path / "r.pdf"
    pdf.write_bytes(pdf_bytes(report_pages(ctx, vol), "test"))
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout
    assert "no cluster passed the thresholds" in text
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True)
    assert re.search(r"Pages:\s+3\n", info.stdout)
