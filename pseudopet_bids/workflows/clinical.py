"""The clinical outputs of one analysis: the PDF report and, with ``--dicom-export``, the DICOM
objects for PACS (:mod:`pseudopet_bids.reports.pdf_report`,
:mod:`pseudopet_bids.reports.dicom_export`).

Both are written into the participant's staging folder with its derivatives, so they appear
with them or not at all. ``--dicom-reference`` folders are checked for every participant
before any output exists (:func:`check_references`): a wrong series stops the run (exit 66)
with nothing written.
"""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np

from pseudopet_bids.bids import derivatives as der
from pseudopet_bids.bids.discovery import SubjectInputs
from pseudopet_bids.bids.inputs import input_files
from pseudopet_bids.bids.participants import Participant
from pseudopet_bids.config import RunConfig
from pseudopet_bids.errors import PseudopetError
from pseudopet_bids.io.intake import choose_affine
from pseudopet_bids.provenance import software_versions
from pseudopet_bids.reports import dicom_export as dx
from pseudopet_bids.reports.dicom_reference import (DicomReferenceError, ReferenceSeries,
                                                    check_matches, read_reference_series,
                                                    reference_folder)
from pseudopet_bids.workflows.outputs import SubjectResult

LOGGER = logging.getLogger(__name__)
#: Libraries of the clinical outputs, recorded on the provenance page besides the others.
REPORT_PACKAGES = ("matplotlib", "highdicom", "pydicom")
#: Settings shown on the provenance page: config field → label.
SHOWN_SETTINGS = {"z_threshold": "Z threshold (Z < -T)", "cluster_min_volume": "min. cluster mm3",
                  "gm_threshold": "GM probability", "connectivity": "connectivity",
                  "search_region": "search region", "cluster_inference": "cluster inference",
                  "calibration": "calibration (learned models)",
                  "normalization": "PET normalisation", "n_samples": "samples", "seed": "seed",
                  "skullstrip": "skull stripping", "template_source": "template"}


def _reference_of(cfg: RunConfig, unit: SubjectInputs) -> Path | None:
    root = cfg.report.dicom_reference
    return reference_folder(Path(root), unit.subject, unit.session) if root else None


def check_references(cfg: RunConfig, units: Sequence[SubjectInputs]) -> None:
    """Read every unit's ``--dicom-reference`` series and check it against its T1w.

    Raises
    ------
    DicomReferenceError
        A folder is not one series of the unit's T1w (exit 66), or ``DIR`` itself holds the
        series while several participants are processed.
    """
    if not cfg.report.dicom_reference:
        return
    root = Path(cfg.report.dicom_reference)
    for unit in units:
        folder = _reference_of(cfg, unit)
        assert folder is not None
        if folder == root and len(units) > 1:
            raise DicomReferenceError(
                f"no sub-{unit.subject} folder in --dicom-reference, and {len(units)} "
                "participants are processed", root,
                "put each participant's T1w series in DIR/sub-<label>/ (or "
                "DIR/sub-<label>/ses-<label>/), or select one with --participant-label")
        t1_path = input_files(unit)["t1w"]
        assert t1_path is not None
        img = nib.Nifti1Image.from_filename(t1_path)  # header and voxels, as the intake
        series = read_reference_series(folder, unit.subject)
        check_matches(series, np.asarray(img.dataobj, dtype=np.float32).reshape(img.shape[:3]),
                      choose_affine(img, t1_path))
        LOGGER.info("%s: DICOM reference %s (%d slices, patient %s)", unit.key, folder,
                    len(series.datasets), series.patient or "unnamed")


def _versions() -> dict[str, str]:
    versions = software_versions()
    for name in REPORT_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_clinical_outputs(paths: der.SubjectPaths, result: SubjectResult, cfg: RunConfig,
                           unit: SubjectInputs, participant: Participant | None, model_label: str,
                           analysis: str, z_reference: str, timings: dict[str, float]) -> None:
    """The PDF report and, with ``--dicom-export``, the DICOM export of one analysis, under
    ``paths`` (the staging folder)."""
    # matplotlib is imported here, not with the workflow: it reads $MPLCONFIGDIR when imported,
    # and under a read-only container root only the work folder that prepare_dirs sets it to
    # is writable (an import at module level failed the container run before that)
    from pseudopet_bids.reports.pdf_pages import ReportContext, ReportVolumes
    from pseudopet_bids.reports.pdf_report import report_path, write_pdf_report

    pre = result.pre
    flat = cfg.flat()
    ctx = ReportContext(
        subject=unit.subject, session=unit.session, analysis=analysis,
        pet_name=unit.pet.name if unit.pet is not None else "n/a", model_label=model_label,
        model_sha256=result.model_sha256, z_reference=z_reference, table=result.table,
        group=participant.group if participant else "unknown",
        foci=participant.foci if participant else (), convention=cfg.report.image_convention,
        pet_units=str(unit.pet_meta.get("Units", "")), z_threshold=cfg.detection.z_threshold,
        settings={label: flat[key] for key, label in SHOWN_SETTINGS.items()}
        | {"output hash": cfg.output_hash()},
        versions=_versions(), timings=dict(timings))
    t1 = np.asarray(pre.t1.dataobj, dtype=np.float32)
    vol = ReportVolumes(t1=t1, pet=result.pet, pseudo=result.pseudo, z=result.z,
                        labels=result.labels, affine=pre.affine)
    try:
        pdf = write_pdf_report(report_path(paths, analysis), ctx, vol)
    except Exception as exc:  # noqa: BLE001 - without an export, a report never fails a subject
        if cfg.report.dicom_export or isinstance(exc, PseudopetError):
            raise
        LOGGER.debug("PDF report traceback", exc_info=True)
        LOGGER.error("%s: PDF report not written: %s: %s", unit.key, type(exc).__name__, exc)
        return
    if not cfg.report.dicom_export:
        return
    folder = _reference_of(cfg, unit)
    reference: ReferenceSeries | None = None
    if folder is not None:
        reference = read_reference_series(folder, unit.subject)
        check_matches(reference, t1, pre.affine)
    inputs = dx.ExportInputs(
        subject=unit.subject, session=unit.session, analysis=analysis, t1=t1, z=result.z,
        labels=result.labels, voxel_sizes=vol.voxel_sizes, table=result.table,
        z_threshold=cfg.detection.z_threshold, convention=cfg.report.image_convention, pdf=pdf,
        peaks=dx.peak_voxels(result.table, pre.affine, t1.shape))
    files = dx.write_export(dx.export_folder(paths.pet_dir, paths.pet_prefix, analysis),
                            dx.export_datasets(inputs, reference))
    LOGGER.info("%s: DICOM export, %d file(s)%s", unit.key, len(files),
                "" if reference is None else f" (SEG and Parametric Map on {folder})")
