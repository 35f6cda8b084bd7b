"""Orthogonal planes of a RAS volume as a reader sees them, in radiological or neurological
convention, with the letters of their four edges (pure functions, no I/O).

Used by the PDF report (:mod:`pdf_pages`) and the DICOM secondary captures
(:mod:`dicom_export`), so that both show a hemisphere on the same side of the screen.

Conventions (axial and coronal planes): *radiological* puts the patient's right on the left of
the image (as if facing the patient; PACS default), *neurological* puts the patient's left on
the left (as seen from behind or above). Sagittal planes show anterior on the left in both.
Rows always run from superior (coronal, sagittal) or anterior (axial) at the top.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pseudopet_bids.config import IMAGE_CONVENTIONS as CONVENTIONS  # --image-convention
#: Plane name → the RAS axis held fixed.
PLANES = {"axial": 2, "coronal": 1, "sagittal": 0}

#: The deficit colour scale of every Z image (HTML figures, viewer, PDF, DICOM): (fraction from
#: the threshold (0) to the strongest shown deficit (1), RGB). Dark red at the threshold, bright
#: yellow for the strongest, so that the strongest deficits stand out most on a grey T1w.
Z_DEFICIT_STOPS: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (0.0, (179, 0, 0)), (1 / 3, (255, 90, 0)), (2 / 3, (255, 196, 0)), (1.0, (255, 255, 102)))


def deficit_rgb(depth: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] (shape ``depth.shape + (3,)``) of deficit depths in [0, 1] on
    :data:`Z_DEFICIT_STOPS`."""
    at = [f for f, _ in Z_DEFICIT_STOPS]
    d = np.clip(depth, 0.0, 1.0)
    return np.stack([np.interp(d, at, [c[k] / 255.0 for _, c in Z_DEFICIT_STOPS])
                     for k in range(3)], axis=-1)


@dataclass(frozen=True)
class Edges:
    """Letters of an image's left, right, top and bottom edges (patient directions)."""

    left: str
    right: str
    top: str
    bottom: str


def check_convention(convention: str) -> None:
    """Refuse an unknown convention (a programming error: the parser checks the option)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, not {convention!r}")


def edges(plane: str, convention: str) -> Edges:
    """The patient directions at the edges of a displayed plane."""
    check_convention(convention)
    if plane == "sagittal":
        return Edges("A", "P", "S", "I")
    lr = ("R", "L") if convention == "radiological" else ("L", "R")
    top, bottom = ("A", "P") if plane == "axial" else ("S", "I")
    return Edges(lr[0], lr[1], top, bottom)


def plane(volume: np.ndarray, name: str, index: int, convention: str) -> np.ndarray:
    """The 2-D image of plane ``name`` through voxel ``index`` of a RAS-ordered ``volume``.

    Row 0 is the top of the displayed image and column 0 its left edge (:func:`edges`).
    """
    check_convention(convention)
    axis = PLANES[name]
    where: list[slice | int] = [slice(None)] * 3
    where[axis] = int(index)
    cut = volume[tuple(where)]  # a view (np.take copied the volume: 1 s per plane at 1 mm)
    image = cut.T[::-1, :]  # rows: second axis (A or S) from the top
    if name == "sagittal":
        return image[:, ::-1]  # columns: anterior on the left
    return image[:, ::-1] if convention == "radiological" else image


def pixel_aspect(voxel_sizes: Sequence[float], name: str) -> float:
    """Height / width of a displayed pixel of plane ``name`` (for ``imshow(aspect=...)``)."""
    axes = [a for a in range(3) if a != PLANES[name]]
    return float(voxel_sizes[axes[1]]) / float(voxel_sizes[axes[0]])


def window(values: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.5
           ) -> tuple[float, float]:
    """A display window (low, high) from percentiles of the finite, non-zero values."""
    finite = values[np.isfinite(values) & (values != 0)]
    if not finite.size:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(finite, [low_pct, high_pct]))
    return (low, high) if high > low else (low, low + 1.0)
