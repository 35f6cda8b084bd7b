"""``--dicom-export``: DICOM objects for PACS built with highdicom and pydicom (no file I/O
here but :func:`write_export`).

Per (subject, session, PET, analysis), into ``sub-<L>/[ses-<S>/]dicom/<PET prefix>_desc-<analysis>/``:

``SC_<nnnn>.dcm``  Secondary Capture series of RGB fused axial images: the T1w (window from
                   its 1st to 99.5th brain percentile, burned into grey levels) with the Z-map
                   below ``-threshold`` on the report's deficit scale (dark red to yellow) and
                   the clusters' outlines in cyan, the patient directions burned in at the edges, one image every
                   :data:`SC_SPACING_MM` through the searched grey matter (and every cluster's
                   peak slice). The window is burned in because the VOI LUT (Window
                   Center/Width) of DICOM applies to monochrome images only.
``DOC_report.dcm`` the PDF report as Encapsulated PDF.
``SEG_clusters.dcm`` (``--dicom-reference`` and at least one cluster) a DICOM Segmentation, one
                   segment per cluster, on the frames of the original T1w series.
``PM_zmap.dcm``    (``--dicom-reference``) a Parametric Map of Z on those frames (uint16,
                   real-world value slope 0.001, intercept -32.768; window on Z 0 ± 5),
                   JPEG-LS lossless (pyjpegls, a highdicom dependency): the other objects
                   stay uncompressed, the transfer syntax every PACS reads.

"RESEARCH USE" leads every SeriesDescription. Without a reference, the objects belong to a
study of their own (Patient ID ``sub-<L>``, a Study Instance UID derived from the subject and
session, so that all analyses of a session share it); with one, they join the original study
(patient and study attributes copied) and the SEG and Parametric Map reference its series.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, generate_uid

from pseudopet_bids import __version__
from pseudopet_bids.io.files import atomic_write_bytes
from pseudopet_bids.reports import planes
from pseudopet_bids.reports.dicom_reference import ReferenceSeries, to_series_order

DICOM_FOLDER = "dicom"
#: Distance between the secondary-capture slices.
SC_SPACING_MM = 3.0
#: Smallest displayed side of a secondary capture (voxels repeated by a whole factor).
SC_MIN_SIDE = 256
Z_LIMIT = 5.0
PM_SLOPE = 0.001
PM_INTERCEPT = -32.768
MANUFACTURER = "pseudopet"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
SERIES_NUMBERS = {"sc": 9001, "doc": 9002, "seg": 9003, "pm": 9004}
OUTLINE_RGB = (0, 229, 255)
LETTER_RGB = (255, 255, 102)


@dataclass(frozen=True)
class ExportInputs:
    """What the export shows, on the RAS-ordered T1w grid (``labels``: cluster ids)."""

    subject: str
    session: str | None
    analysis: str
    t1: np.ndarray
    z: np.ndarray
    labels: np.ndarray
    voxel_sizes: tuple[float, float, float]
    table: pd.DataFrame
    z_threshold: float
    convention: str
    pdf: bytes
    peaks: tuple[tuple[int, int, int], ...] = ()


def export_folder(pet_dir: Path, pet_prefix: str, analysis: str) -> Path:
    """``sub-<L>/[ses-<S>/]dicom/<PET prefix>_desc-<analysis>/`` (beside ``pet_dir``)."""
    return pet_dir.parent / DICOM_FOLDER / f"{pet_prefix}_desc-{analysis}"


# --------------------------------------------------------------------------- identity

def _patient_study(inputs: ExportInputs, reference: ReferenceSeries | None) -> dict[str, object]:
    """Patient and study attributes: the reference's, or a study of the subject's own."""
    if reference is not None:
        ref = reference.datasets[0]
        return {"patient_id": str(ref.get("PatientID", "")),
                "patient_name": ref.get("PatientName", None),
                "patient_birth_date": str(ref.get("PatientBirthDate", "")) or None,
                "patient_sex": str(ref.get("PatientSex", "")) or None,
                "accession_number": str(ref.get("AccessionNumber", "")) or None,
                "study_id": str(ref.get("StudyID", "")) or None,
                "study_date": str(ref.get("StudyDate", "")) or None,
                "study_time": str(ref.get("StudyTime", "")) or None,
                "referring_physician_name": ref.get("ReferringPhysicianName", None),
                "study_instance_uid": str(ref.StudyInstanceUID)}
    key = f"sub-{inputs.subject}" + (f"_ses-{inputs.session}" if inputs.session else "")
    # "sub-01^": a family name alone (a name without "^" reads as malformed)
    return {"patient_id": f"sub-{inputs.subject}", "patient_name": f"sub-{inputs.subject}^",
            "study_instance_uid": generate_uid(entropy_srcs=["pseudopet study", key])}


def _description(kind: str, inputs: ExportInputs) -> str:
    """``RESEARCH USE pseudopet <kind> <analysis>`` (at most 64 characters, DICOM LO)."""
    return f"RESEARCH USE pseudopet {kind} {inputs.analysis}"[:64]


# --------------------------------------------------------------------------- fused images

@functools.lru_cache(maxsize=16)
def _glyph(letter: str, size: int) -> np.ndarray:
    """A letter as a boolean bitmap ``size`` pixels high (drawn once by matplotlib's Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size / 100, size / 100), dpi=100)
    canvas = FigureCanvasAgg(fig)
    fig.text(0.5, 0.5, letter, ha="center", va="center", fontsize=size * 0.8 * 72 / 100,
             weight="bold", color="black")
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return rgba[..., 0] < 128


def _stamp(rgb: np.ndarray, letter: str, row: int, col: int) -> None:
    mask = _glyph(letter, max(10, rgb.shape[0] // 24))
    h, w = mask.shape
    r0 = int(np.clip(row - h // 2, 0, rgb.shape[0] - h))
    c0 = int(np.clip(col - w // 2, 0, rgb.shape[1] - w))
    rgb[r0:r0 + h, c0:c0 + w][mask] = LETTER_RGB


def fused_slice(t1: np.ndarray, z: np.ndarray, labels: np.ndarray, t1_window: tuple[float, float],
                threshold: float) -> np.ndarray:
    """RGB (uint8) of one displayed plane: grey T1w, Z below ``-threshold`` on the report's
    deficit scale (:data:`planes.Z_DEFICIT_STOPS`: dark red at the threshold to yellow at
    ``-Z_LIMIT``), cluster outlines in cyan."""
    lo, hi = t1_window
    grey = np.clip((t1 - lo) / (hi - lo), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    hypo = z <= -threshold
    depth = np.clip((-z - threshold) / max(Z_LIMIT - threshold, 1e-6), 0, 1)
    colour = planes.deficit_rgb(depth)
    alpha = 0.65
    rgb[hypo] = (1 - alpha) * rgb[hypo] + alpha * colour[hypo]
    out = (rgb * 255 + 0.5).astype(np.uint8)
    edge = np.zeros(labels.shape, bool)
    edge[:-1] |= labels[:-1] != labels[1:]
    edge[1:] |= labels[:-1] != labels[1:]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:, 1:] |= labels[:, :-1] != labels[:, 1:]
    out[edge & (labels > 0)] = OUTLINE_RGB
    return out


def sc_slices(inputs: ExportInputs) -> list[int]:
    """Axial slice indices shown: every :data:`SC_SPACING_MM` through the searched grey matter
    (where Z was computed), plus each cluster's peak slice."""
    has_z = np.flatnonzero((inputs.z != 0).any(axis=(0, 1)))
    if not has_z.size:
        has_z = np.flatnonzero((inputs.t1 != 0).any(axis=(0, 1)))
    if not has_z.size:
        return []
    step = max(1, int(round(SC_SPACING_MM / inputs.voxel_sizes[2])))
    chosen = set(range(int(has_z[0]), int(has_z[-1]) + 1, step))
    chosen.update(p[2] for p in inputs.peaks)
    return sorted(chosen)


def secondary_captures(inputs: ExportInputs, reference: ReferenceSeries | None
                       ) -> list[Dataset]:
    """The Secondary Capture series (see module docstring), top of the head last."""
    ident = _patient_study(inputs, reference)
    series_uid = hd.UID()
    brain = inputs.t1[inputs.t1 != 0]
    t1_window = planes.window(brain) if brain.size else (0.0, 1.0)
    sides = planes.edges("axial", inputs.convention)
    orientation = ("L", "P") if inputs.convention == "radiological" else ("R", "P")
    factor = max(1, int(np.ceil(SC_MIN_SIDE / max(inputs.t1.shape[0], inputs.t1.shape[1]))))
    spacing = (inputs.voxel_sizes[1] / factor, inputs.voxel_sizes[0] / factor)
    out: list[Dataset] = []
    for number, k in enumerate(sc_slices(inputs), 1):
        parts = [planes.plane(a, "axial", k, inputs.convention)
                 for a in (inputs.t1, inputs.z, inputs.labels)]
        rgb = fused_slice(parts[0], parts[1], parts[2], t1_window, inputs.z_threshold)
        rgb = np.ascontiguousarray(rgb.repeat(factor, axis=0).repeat(factor, axis=1))
        rows, cols = rgb.shape[:2]
        for letter, (r, c) in ((sides.left, (rows // 2, rows // 40 + 8)),
                               (sides.right, (rows // 2, cols - rows // 40 - 8)),
                               (sides.top, (rows // 40 + 8, cols // 2)),
                               (sides.bottom, (rows - rows // 40 - 8, cols // 2))):
            _stamp(rgb, letter, r, c)
        sc = hd.sc.SCImage(
            pixel_array=rgb, photometric_interpretation="RGB", bits_allocated=8,
            coordinate_system="PATIENT", series_instance_uid=series_uid,
            series_number=SERIES_NUMBERS["sc"], sop_instance_uid=hd.UID(),
            instance_number=number, manufacturer=MANUFACTURER, pixel_spacing=spacing,
            patient_orientation=orientation, **ident)  # type: ignore[arg-type]
        sc.SeriesDescription = _description("fused Z", inputs)
        sc.BurnedInAnnotation = "YES"
        sc.BodyPartExamined = "HEAD"  # unpaired: no Laterality (dciodvfy asks for one without it)
        sc.ImageComments = (f"Axial slice {k} of the T1w grid; Z < -{inputs.z_threshold:g} in "
                            f"dark red to yellow (stronger = brighter), clusters outlined in cyan; "
                            f"{inputs.convention} convention")
        sc.SoftwareVersions = __version__
        out.append(sc)
    return out


# --------------------------------------------------------------------------- PDF

def encapsulated_pdf(inputs: ExportInputs, reference: ReferenceSeries | None) -> Dataset:
    """The PDF report as an Encapsulated PDF object (PS3.3 A.45.1)."""
    ident = _patient_study(inputs, reference)
    ds = Dataset()
    ds.SOPClassUID = ENCAPSULATED_PDF
    ds.SOPInstanceUID = hd.UID()
    ds.SpecificCharacterSet = "ISO_IR 192"
    now = pd.Timestamp.now()
    ds.InstanceCreationDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.PatientName = ident.get("patient_name") or ""
    ds.PatientID = ident["patient_id"]
    ds.PatientBirthDate = ident.get("patient_birth_date") or ""
    ds.PatientSex = ident.get("patient_sex") or ""
    ds.StudyInstanceUID = ident["study_instance_uid"]
    ds.StudyDate = ident.get("study_date") or ""
    ds.StudyTime = ident.get("study_time") or ""
    ds.ReferringPhysicianName = ident.get("referring_physician_name") or ""
    ds.StudyID = ident.get("study_id") or ""
    ds.AccessionNumber = ident.get("accession_number") or ""
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = hd.UID()
    ds.SeriesNumber = SERIES_NUMBERS["doc"]
    ds.SeriesDescription = _description("report", inputs)
    ds.Manufacturer = MANUFACTURER
    ds.SoftwareVersions = __version__
    ds.ConversionType = "WSD"  # workstation
    ds.InstanceNumber = 1
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = f"pseudopet focus report {inputs.analysis} (RESEARCH USE)"[:64]
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    data = inputs.pdf + (b"\0" if len(inputs.pdf) % 2 else b"")  # OB values have even length
    ds.EncapsulatedDocument = data
    ds.EncapsulatedDocumentLength = len(inputs.pdf)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


# --------------------------------------------------------------------------- SEG and PM

def _algorithm() -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name="pseudopet", version=__version__, family=codes.cid7162.ArtificialIntelligence)


def segmentation(inputs: ExportInputs, reference: ReferenceSeries) -> Dataset | None:
    """One segment per cluster on the reference's frames (None without clusters)."""
    if not len(inputs.table):
        return None
    labels = to_series_order(inputs.labels, reference)
    ids = [int(i) for i in inputs.table["cluster_id"]]
    lookup = np.zeros(int(labels.max()) + 1, dtype=np.uint16)
    for number, cid in enumerate(ids, 1):  # segment numbers must run 1..n
        if cid < lookup.size:
            lookup[cid] = number
    segments = lookup[labels.astype(np.intp)]
    descriptions = [hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=f"cluster {cid} {row.region} {row.tier}"[:64],
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type="AUTOMATIC", algorithm_identification=_algorithm())
        for number, (cid, row) in enumerate(zip(ids, inputs.table.itertuples()), 1)]
    seg = hd.seg.Segmentation(
        source_images=list(reference.datasets),
        pixel_array=segments.astype(np.uint8 if len(ids) < 256 else np.uint16),
        segmentation_type="BINARY", segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=SERIES_NUMBERS["seg"],
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name="pseudopet", software_versions=__version__,
        device_serial_number="none", series_description=_description("clusters", inputs),
        content_label="CLUSTERS",
        content_description=f"Z < -{inputs.z_threshold:g} clusters, {inputs.analysis}"[:64])
    return seg


def parametric_map(inputs: ExportInputs, reference: ReferenceSeries) -> Dataset:
    """Z on the reference's frames as uint16 with a real-world value mapping
    (Z = stored × :data:`PM_SLOPE` + :data:`PM_INTERCEPT`; highdicom takes no signed integers,
    and float32 would double the size)."""
    z = to_series_order(np.nan_to_num(inputs.z), reference)
    stored = np.clip(np.rint((z - PM_INTERCEPT) / PM_SLOPE), 0, 65535).astype(np.uint16)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="Z", lut_explanation="Z of real minus pseudo-normal FDG PET",
        unit=codes.UCUM.NoUnits, value_range=(int(stored.min()), int(stored.max())),
        slope=PM_SLOPE, intercept=PM_INTERCEPT)
    zero = -PM_INTERCEPT / PM_SLOPE  # the stored value of Z = 0
    pm = hd.pm.ParametricMap(
        source_images=list(reference.datasets), pixel_array=stored,
        series_instance_uid=hd.UID(), series_number=SERIES_NUMBERS["pm"],
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name="pseudopet", software_versions=__version__,
        device_serial_number="none", contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(
            window_center=zero, window_width=2 * Z_LIMIT / PM_SLOPE)],
        transfer_syntax_uid=JPEGLSLossless,  # 1.3 MB instead of 30 (1 mm, 224 slices)
        content_label="ZMAP", content_description=f"Z-map {inputs.analysis}"[:64],
        series_description=_description("Z-map", inputs))
    pm.BodyPartExamined = "HEAD"  # as the secondary captures
    return pm


# --------------------------------------------------------------------------- all, and writing

def export_datasets(inputs: ExportInputs, reference: ReferenceSeries | None
                    ) -> dict[str, Dataset]:
    """File name → dataset of the whole export (see module docstring)."""
    out = {f"SC_{n:04d}.dcm": ds
           for n, ds in enumerate(secondary_captures(inputs, reference), 1)}
    out["DOC_report.dcm"] = encapsulated_pdf(inputs, reference)
    if reference is not None:
        seg = segmentation(inputs, reference)
        if seg is not None:
            out["SEG_clusters.dcm"] = seg
        out["PM_zmap.dcm"] = parametric_map(inputs, reference)
    return out


def dataset_bytes(ds: Dataset) -> bytes:
    """A DICOM file (preamble, meta header) in memory."""
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def write_export(folder: Path, datasets: dict[str, Dataset]) -> list[Path]:
    """Write every dataset atomically into ``folder``; returns the files."""
    written = []
    for name, ds in datasets.items():
        atomic_write_bytes(folder / name, dataset_bytes(ds))
        written.append(folder / name)
    return written


def peak_voxels(table: pd.DataFrame, affine: np.ndarray, shape: Sequence[int]
                ) -> tuple[tuple[int, int, int], ...]:
    """Each cluster's peak as a voxel of the grid (``peak_x_mm`` … through the affine)."""
    if not len(table):
        return ()
    xyz = table[["peak_x_mm", "peak_y_mm", "peak_z_mm"]].to_numpy(float)
    ijk = np.rint((np.linalg.inv(affine) @ np.c_[xyz, np.ones(len(xyz))].T)[:3].T)
    ijk = np.clip(ijk, 0, np.asarray(shape[:3]) - 1).astype(int)
    return tuple((int(i), int(j), int(k)) for i, j, k in ijk)
