"""The clinical PDF report of one (subject, session, PET, analysis): pages from
:mod:`pdf_pages`, written with matplotlib's PDF backend.

Why matplotlib's ``PdfPages``: matplotlib already draws every figure of the project (no new
dependency, no system library such as Cairo or a LaTeX install), its PDF backend writes vector
text and line art with the images embedded at their voxel resolution, and with TrueType
(type 42) fonts the text is selectable and searchable (``pdftotext`` reads it). Without a
creation date, equal inputs give byte-identical files.

Name: ``sub-<L>/[ses-<S>/]report/<PET prefix>_desc-<analysis>_report.pdf`` (listed in
``.bidsignore``: BIDS has no place for it).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable

from matplotlib import rc_context
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from pseudopet_bids import __version__
from pseudopet_bids.bids.derivatives import SubjectPaths
from pseudopet_bids.io.files import atomic_write_bytes
from pseudopet_bids.reports.pdf_pages import ReportContext, ReportVolumes, report_pages

REPORT_FOLDER = "report"


def report_path(paths: SubjectPaths, analysis: str) -> Path:
    """``sub-<L>/[ses-<S>/]report/<PET prefix>_desc-<analysis>_report.pdf`` under ``paths``."""
    return paths.pet_dir.parent / REPORT_FOLDER / f"{paths.pet_prefix}_desc-{analysis}_report.pdf"


def pdf_bytes(pages: Iterable[Figure], title: str) -> bytes:
    """A PDF of ``pages`` (one page per figure) with TrueType text and no creation date."""
    buf = io.BytesIO()
    with rc_context({"pdf.fonttype": 42, "font.family": "DejaVu Sans"}):
        with PdfPages(buf, metadata={"Title": title, "Creator": f"pseudopet {__version__}",
                                     "Producer": "matplotlib", "CreationDate": None}) as pdf:
            for fig in pages:
                pdf.savefig(fig)
    return buf.getvalue()


def write_pdf_report(path: Path, ctx: ReportContext, vol: ReportVolumes) -> bytes:
    """Write the report to ``path`` atomically; returns its bytes (for the DICOM export)."""
    data = pdf_bytes(report_pages(ctx, vol), f"pseudopet focus report: {ctx.title}")
    atomic_write_bytes(path, data)
    return data
