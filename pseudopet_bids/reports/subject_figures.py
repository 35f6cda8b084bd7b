"""Quality-check figures of one (subject, session, PET, analysis), written by the participant
workflow inside its staging folder under ``sub-<L>/figures/``.

Figure names::

    <anat prefix>_desc-segmentation.png     brain mask and grey matter on the T1w
    <anat prefix>_desc-templatereg.png      T1w resampled to the template, template outline
    <anat prefix>_desc-templateregReference.png   the template T1w under the same outlines
    <PET prefix>_desc-coregistration.png    PET on the T1w grid with the T1w edges
    <PET prefix>_desc-coregistrationReference.png the T1w under the same edges

The ``…Reference`` figures are the other frame of a registration's flicker: same layout and
pixels as the registered image's figure, shown in turn with it by the report.
    <PET prefix>_desc-<model>Pet.png        real vs pseudo-normal PET, D, (SynDiff SD)
    <PET prefix>_desc-<analysis>Zmap.png    Z-map and clusters
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from pseudopet_bids import resources
from pseudopet_bids.bids import derivatives as der
from pseudopet_bids.detect.regions import assign_region
from pseudopet_bids.io import files
from pseudopet_bids.reports import figures as F
from pseudopet_bids.reports.mosaic import _resample

LOGGER = logging.getLogger(__name__)
TEMPLATE_FIGURE_MM = 2.0
#: File-name suffix of each registration frame (the registered image keeps the plain name).
FRAME_SUFFIX = {"registered": "", "reference": "Reference"}
#: What each frame shows, appended to the figure's title.
FRAME_TITLES = {"coregistration": {"registered": ": PET with the T1w edges",
                                   "reference": ": T1w (reference) with its edges"},
                "templatereg": {"registered": ": subject T1w",
                                "reference": ": template T1w (reference)"}}


# --------------------------------------------------------------------------- figure names

def anat_figure(paths: der.SubjectPaths, kind: str) -> Path:
    """``<anat prefix>_desc-<kind>.png`` (``segmentation``, ``templatereg``)."""
    return paths.figure_dir / f"{paths.anat_prefix}_desc-{kind}.png"


def pet_figure_path(paths: der.SubjectPaths, desc: str) -> Path:
    """``<PET prefix>_desc-<desc>.png`` (``coregistration``, ``<m>Pet``, ``<a>Zmap``)."""
    return paths.figure_dir / f"{paths.pet_prefix}_desc-{desc}.png"


# --------------------------------------------------------------------------- figures

@functools.lru_cache(maxsize=1)
def template_at(mm: float = TEMPLATE_FIGURE_MM) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """The template T1w and brain mask on a ``mm`` grid covering the 1 mm template."""
    t1 = resources.load_template("T1w")
    mask = resources.load_template("mask")
    zoom = float(np.sqrt((t1.affine[:3, :3] ** 2).sum(axis=0))[0])
    factor = mm / zoom
    affine = t1.affine.copy()
    affine[:3, :3] *= factor
    # keep the field of view: the first voxel centre moves by half the size change
    affine[:3, 3] = t1.affine[:3, 3] + t1.affine[:3, :3] @ np.full(3, (factor - 1) / 2)
    shape = tuple(int(np.ceil(n / factor)) for n in t1.shape[:3])
    t1_small = _resample(np.asarray(t1.dataobj, np.float32), t1.affine, shape, affine, 1)
    mask_small = _resample(np.asarray(mask.dataobj, np.float32), mask.affine, shape, affine, 1)
    return (nib.Nifti1Image(t1_small, affine),
            nib.Nifti1Image((mask_small > 0.5).astype(np.float32), affine))


def cluster_regions(labels: np.ndarray, lobes: np.ndarray) -> dict[int, str]:
    """Cluster label → region by the rule of the cluster table (majority lobe)."""
    labels = np.asarray(labels)
    out = {}
    for value in np.unique(labels[labels > 0]).astype(int):
        try:
            out[int(value)] = assign_region(np.asarray(lobes)[labels == value])[0]
        except ValueError:
            continue
    return out


def write_subject_figures(paths: der.SubjectPaths, pre, pet: np.ndarray, pseudo: np.ndarray,
                          pseudo_sd: np.ndarray | None, z: np.ndarray, labels: np.ndarray,
                          model: str, analysis: str, z_threshold: float) -> list[Path]:
    """Write the quality-check figures of one (subject, session, PET, analysis).

    Parameters
    ----------
    paths
        Output names (rooted at the participant workflow's staging folder).
    pre
        The :class:`~pseudopet_bids.preproc.pipeline.Preprocessed` record (T1w, mask, tissues,
        lobes, registration; ``pre.pet``, the PET on the T1w grid in its own units, for the
        coregistration check).
    pet, pseudo, pseudo_sd
        Real and pseudo-normal PET on the T1w grid (same units), and the SD of SynDiff's
        samples (None otherwise).
    z, labels
        Z-map and cluster labels on the T1w grid.
    model, analysis
        Model and analysis labels (``tissue``, ``tissueNorm`` …).
    z_threshold
        The (positive) detection threshold.

    Returns
    -------
    list of Path
        The figures written. A figure that fails is logged and left out: QC figures never stop
        the analysis.
    """
    t1 = pre.t1
    affine = pre.affine
    mask = np.asarray(pre.mask, bool)
    written: list[Path] = []

    def img(data) -> nib.Nifti1Image:
        return nib.Nifti1Image(np.asarray(data, np.float32), affine)

    def make(path: Path, fn, *args, **kwargs) -> None:
        t0 = time.monotonic()
        try:
            data = fn(*args, **kwargs)
            files.atomic_write_bytes(path, data)
            written.append(path)
            LOGGER.debug("%s: figure %s in %.1f s (%d kB)", paths.pet_prefix, path.name,
                         time.monotonic() - t0, len(data) // 1024)
        except Exception as exc:  # a QC figure must not fail the subject
            LOGGER.warning("%s: figure %s not made: %s: %s", paths.pet_prefix, path.name,
                           type(exc).__name__, exc)

    who = paths.anat_prefix
    make(anat_figure(paths, "segmentation"), F.segmentation_figure, t1, mask,
         pre.tissues["GM"], title=f"{who}: brain mask and grey matter")

    warped: list[nib.Nifti1Image] = []  # the T1w in template space, warped once for both

    def template_check(frame: str) -> bytes:
        tpl, tpl_mask = template_at()
        if not warped:
            brain = img(np.asarray(t1.dataobj, np.float32) * mask)
            warped.append(pre.registration.to_template(brain, "linear", tpl))
        return F.template_figure(warped[0], tpl, tpl_mask, frame=frame,
                                 title=f"{who}: T1w brain → template registration"
                                 + FRAME_TITLES["templatereg"][frame])

    for frame in F.FRAMES:
        make(anat_figure(paths, "templatereg" + FRAME_SUFFIX[frame]), template_check, frame)
    if getattr(pre, "pet", None) is not None:
        for frame in F.FRAMES:
            make(pet_figure_path(paths, "coregistration" + FRAME_SUFFIX[frame]),
                 F.coregistration_figure, t1, pre.pet, mask, frame=frame,
                 title=f"{paths.pet_prefix}: PET → T1w coregistration"
                 + FRAME_TITLES["coregistration"][frame])
    make(pet_figure_path(paths, f"{model}Pet"), F.pet_figure, img(pet), pseudo, mask,
         sd=pseudo_sd, title=f"{paths.pet_prefix}: real vs {model} pseudo-normal PET")
    make(pet_figure_path(paths, f"{analysis}Zmap"), F.zmap_figure, t1, z, labels, z_threshold,
         cluster_names=cluster_regions(labels, pre.lobes),
         title=f"{paths.pet_prefix}: Z-map ({analysis})")
    return written
