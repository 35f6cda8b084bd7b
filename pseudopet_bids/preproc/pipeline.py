"""Per-subject preprocessing: brain mask, tissues, template registration, PET→T1w coregistration.

Each step is a swappable function of its own module; this module only orders them, times them,
and hands their results on as one :class:`Preprocessed` record (arrays on the T1w grid).
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import nibabel as nib
import numpy as np

from pseudopet_bids import resources
from pseudopet_bids.errors import ProcessingError

LOGGER = logging.getLogger(__name__)


@dataclass
class Preprocessed:
    """Everything the synthesis and detection steps need, on the T1w grid (RAS).

    Attributes
    ----------
    t1
        The T1w as read (RAS, float32): defines the ``T1w`` space of the derivatives.
    mask
        Brain mask (bool).
    tissues
        ``GM``, ``WM``, ``CSF`` probability maps (float32).
    pet
        The static PET resampled onto the T1w grid (original units).
    lobes, aal
        Lobe labels and AAL labels brought from the template (int16).
    registration
        The T1w→template registration (``to_t1``, ``points_to_template``, ``write``).
    coregistration
        The PET→T1w rigid registration result.
    timings
        Seconds per step.
    """

    t1: nib.Nifti1Image
    mask: np.ndarray
    tissues: dict[str, np.ndarray]
    pet: np.ndarray
    lobes: np.ndarray
    aal: np.ndarray
    registration: object
    coregistration: object
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def affine(self) -> np.ndarray:
        return self.t1.affine

    @property
    def voxel_sizes(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in self.t1.header.get_zooms()[:3])


@contextmanager
def timed(timings: dict[str, float], step: str, key: str) -> Iterator[None]:
    """Log the start and duration of a step and store its duration."""
    LOGGER.info("%s: %s ...", key, step)
    t0 = time.monotonic()
    yield
    timings[step] = round(time.monotonic() - t0, 2)
    LOGGER.info("%s: %s done in %.1f s", key, step, timings[step])


def preprocess(t1: nib.Nifti1Image, pet: nib.Nifti1Image, workdir: Path, seed: int,
               omp_nthreads: int = 1, skullstrip: str = "deepbet", key: str = "subject"
               ) -> Preprocessed:
    """Run the preprocessing steps of one subject.

    Parameters
    ----------
    t1, pet
        Checked RAS images (3D); PET already static.
    workdir
        Folder for intermediate transform files of this subject.
    seed
        Random seed passed to every step.
    omp_nthreads
        Threads for ANTs and torch.
    skullstrip
        ``deepbet`` or ``template`` (see ``preproc/brainmask.py``).
    key
        Name used in log lines.
    """
    from pseudopet_bids.preproc.brainmask import brain_mask
    from pseudopet_bids.preproc.coregister import coregister_pet_to_t1, resample_pet_to_t1
    from pseudopet_bids.preproc.segment import segment_tissues
    from pseudopet_bids.preproc.template_reg import register_t1_to_template

    workdir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    with timed(timings, "brain mask", key):
        mask_img = brain_mask(t1, method=skullstrip, omp_nthreads=omp_nthreads)
    mask = np.asarray(mask_img.dataobj) > 0
    brain_ml = mask.sum() * np.prod(t1.header.get_zooms()[:3]) / 1000.0
    LOGGER.info("%s: brain mask volume %.0f ml", key, brain_ml)
    if not 500 <= brain_ml <= 2500:
        raise ProcessingError(f"the brain mask has an implausible volume ({brain_ml:.0f} ml); "
                              "the T1w may be partial, not a head, or badly oriented",
                              None, "check the T1w image; try --skullstrip template")
    with timed(timings, "T1w to template registration", key):
        registration = register_t1_to_template(t1, mask_img, workdir, seed=seed,
                                               omp_nthreads=omp_nthreads)
    with timed(timings, "atlas to T1w", key):
        aal = np.asarray(registration.to_t1(resources.load_aal(), "nearest").dataobj
                         ).astype(np.int16)
        lobes = resources.aal_to_lobes(aal)
        priors = {k: registration.to_t1(resources.load_template(k), "linear")
                  for k in ("GM", "WM", "CSF")}
    with timed(timings, "tissue segmentation", key):
        tissue_imgs = segment_tissues(t1, mask_img, seed=seed, priors=priors)
    tissues = {k: np.asarray(v.dataobj, dtype=np.float32) for k, v in tissue_imgs.items()}
    with timed(timings, "PET to T1w coregistration", key):
        coreg = coregister_pet_to_t1(pet, t1, mask_img, seed=seed, omp_nthreads=omp_nthreads)
        pet_t1 = np.asarray(resample_pet_to_t1(pet, t1, coreg).dataobj, dtype=np.float32)
    if not np.any(pet_t1[mask] > 0):
        raise ProcessingError("after coregistration the PET has no signal inside the brain "
                              "mask; PET and T1w do not overlap", None,
                              "check that PET and T1w belong to the same subject and cover "
                              "the brain")
    return Preprocessed(t1=t1, mask=mask, tissues=tissues, pet=pet_t1, lobes=lobes, aal=aal,
                        registration=registration, coregistration=coreg, timings=timings)
