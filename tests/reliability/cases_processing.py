"""Data problems found while processing, past image intake: a T1w without a brain, grey matter
that ``--gm-threshold`` empties, a PET whose signal lies outside the head.

The core finds them on arrays (``errors.DataError``: what is wrong, the fix, and whether the T1w
or the PET is concerned) and the participant workflow names the file. These cases run the
real participant workflow (``pipeline="real"``); the T1w cases run the real deepbet on a
64-voxel cube, the others replace the heavy preprocessing steps (``_stubbed``) so that the real
checks run on small images in seconds.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np

from tests.reliability.cases_geometry import _ball
from tests.reliability.corpus import PET, T1, case, dataset, nifti
from tests.reliability.harness import Scenario

#: The grid of the stubbed cases: a brain volume inside the plausible range (1020 ml).
GRID = np.diag([2.6, 2.6, 2.6, 1.0])


def _stubbed(gm_max: float = 0.9) -> dict:
    """Patches that replace the brain mask, the registrations, the segmentation (GM
    probability ``gm_max`` in the ball of :func:`_ball`) and the preprocessing cache; the
    steps' checks (brain volume, PET coverage) and everything after them run for real."""
    from pseudopet_bids.preproc import coregister, pipeline

    mask = _ball()
    img = nib.Nifti1Image(mask.astype(np.uint8), GRID)
    zeros = nib.Nifti1Image(np.zeros(mask.shape, np.float32), GRID)
    gm = nib.Nifti1Image(np.where(mask, gm_max, 0.0).astype(np.float32), GRID)
    wm = nib.Nifti1Image(np.where(mask, 1.0 - gm_max, 0.0).astype(np.float32), GRID)

    def uncached(images, workdir, preproc, seed, omp_nthreads=1, key="subject", status=None,
                 **_cache_options):
        return pipeline.preprocess(images, workdir, preproc, seed, omp_nthreads, key, status)

    return {
        "pseudopet_bids.preproc.pipeline.brain_mask": lambda t1, **kw: img,
        "pseudopet_bids.preproc.pipeline.register_t1_to_template":
            lambda *a, **kw: SimpleNamespace(to_t1=lambda image, interp: zeros),
        "pseudopet_bids.resources.load_aal": lambda: zeros,
        "pseudopet_bids.resources.load_template": lambda name: zeros,
        "pseudopet_bids.preproc.pipeline.segment_tissues":
            lambda *a, **kw: {"GM": gm, "WM": wm, "CSF": zeros},
        "pseudopet_bids.preproc.pipeline.coregister_pet_to_t1":
            lambda *a, **kw: coregister.RigidResult(t1_to_pet=np.eye(4)),
        "pseudopet_bids.workflows.participant.preprocess_cached": uncached,
    }


def _head_dataset(tmp: Path, pet: np.ndarray | None = None) -> Path:
    """sub-01 with a T1w and a PET on :data:`GRID` (brain brighter than the rest)."""
    root = dataset(tmp)
    mask = _ball()
    nifti(root / T1, np.where(mask, 100.0, 10.0), GRID)
    nifti(root / PET, np.where(mask, 50.0, 1.0) if pet is None else pet, GRID)
    return root


@case("values", "T1w that is a volume of noise (64 x 64 x 64 voxels of 2 mm)", 1,
      "sub-01 fails at the brain mask naming the T1w, nothing written for it (was: deepbet "
      "outlined a 650 ml 'brain' in the noise, registration and segmentation ran on it for "
      "40 s, then the PET was blamed for covering 8 % of that 'brain')",
      "found no brain in the T1w, only noise")
def t1w_of_noise(tmp: Path) -> Scenario:
    root = dataset(tmp)
    nifti(root / T1, np.random.default_rng(0).uniform(1.0, 100.0, (64, 64, 64)))
    return Scenario(root, pipeline="real", file=T1, fix="--skullstrip template",
                    failed={"sub-01"})


@case("values", "T1w with no head in it (an empty volume with a small patch of noise)", 1,
      "sub-01 fails at the brain mask naming the T1w (was: 'failed with an unexpected error: "
      "ValueError: attempt to get argmax of an empty sequence' from inside deepbet, 'please "
      "report it')", "deepbet found no head in the T1w")
def t1w_without_a_head(tmp: Path) -> Scenario:
    root = dataset(tmp)
    data = np.zeros((64, 64, 64))
    data[:8, :8, :8] = np.random.default_rng(0).uniform(1.0, 100.0, (8, 8, 8))
    nifti(root / T1, data)
    return Scenario(root, pipeline="real", file=T1, fix="T1-weighted MRI of a head",
                    failed={"sub-01"})


@case("values", "--gm-threshold 0.99 where no voxel reaches a grey-matter probability of 0.99",
      1, "sub-01 fails before the synthesis naming the T1w and the option (was: 'failed with "
      "an unexpected error: ValueError: PET normalization (gm-median): the reference region is "
      "empty', 'please report it')", "grey-matter probability >= 0.99 (--gm-threshold)")
def grey_matter_empty_after_threshold(tmp: Path) -> Scenario:
    root = _head_dataset(tmp)
    return Scenario(root, ["--gm-threshold", "0.99"], pipeline="real", patch=_stubbed(0.9),
                    file=T1, fix="lower --gm-threshold", failed={"sub-01"})


@case("header and geometry", "PET whose signal lies outside the head after coregistration "
      "(uptake in a shell around the brain, none inside it)", 1,
      "sub-01 fails at the PET coverage check naming the PET, nothing written for it",
      "the PET has no signal inside the brain mask")
def pet_signal_outside_the_head(tmp: Path) -> Scenario:
    grid = np.indices(_ball().shape) - 31.5
    radius = np.sqrt((grid ** 2).sum(0))
    shell = np.where((radius >= 24) & (radius < 30), 50.0, 0.0)
    root = _head_dataset(tmp, pet=shell)
    return Scenario(root, pipeline="real", patch=_stubbed(), file=PET,
                    fix="check that PET and T1w belong to the same subject", failed={"sub-01"})
