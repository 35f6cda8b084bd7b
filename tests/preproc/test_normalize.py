"""PET intensity normalization."""

from __future__ import annotations

import numpy as np
import pytest

from pseudopet_bids.errors import DataError
from pseudopet_bids.preproc.normalize import normalize_pet, reference_region


@pytest.fixture
def volumes(rng):
    shape = (12, 12, 12)
    brain = np.zeros(shape, bool)
    brain[2:10, 2:10, 2:10] = True
    gm = np.zeros(shape, np.float32)
    gm[2:10, 2:10, 2:5] = 0.9  # 192 GM voxels
    pet = np.where(brain, 1.0, 0.0).astype(np.float32)  # WM/CSF uptake 1
    pet[gm > 0.5] = 3.0 + rng.normal(0, 0.01, int((gm > 0.5).sum()))
    return pet, gm, brain


def test_gm_median_ignores_focal_drop(volumes):
    pet, gm, brain = volumes
    ref = reference_region(gm, brain)
    focal = pet.copy()
    focal[2:10, 2:4, 2:5] *= 0.5  # 25 % of the GM at half uptake
    out, scale, info = normalize_pet(focal, ref)
    assert scale == pytest.approx(3.0, rel=0.01)
    _, mean_scale, _ = normalize_pet(focal, ref, method="brain-mean")
    assert mean_scale < 0.9 * 3.0  # the mean is pulled down by the focus, the median is not
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, focal / scale, rtol=1e-6)
    assert info["Method"] == "gm-median" and info["ReferenceVoxels"] == int(ref.sum())
    assert info["Scale"] == scale


def test_brain_mean(volumes):
    pet, _, brain = volumes
    out, scale, info = normalize_pet(pet, brain, method="brain-mean")
    assert scale == pytest.approx(pet[brain].mean(), rel=1e-6)
    assert out[brain].mean() == pytest.approx(1.0, rel=1e-5)
    assert info["Method"] == "brain-mean"


def test_reference_region_threshold(volumes):
    _, gm, brain = volumes
    assert not reference_region(gm, brain, threshold=0.95).any()
    outside = gm.copy()
    outside[0, 0, 0] = 1.0  # GM outside the brain mask is not reference
    assert not reference_region(outside, brain)[0, 0, 0]


def test_errors(volumes):
    pet, gm, brain = volumes
    with pytest.raises(DataError, match="empty"):  # data problems: the file is named upstream
        normalize_pet(pet, np.zeros_like(brain))
    with pytest.raises(DataError, match="must be > 0"):
        normalize_pet(np.zeros_like(pet), brain)
    with pytest.raises(DataError, match="must be > 0"):
        normalize_pet(-pet, brain, method="brain-mean")
    with pytest.raises(ValueError, match="unknown"):
        normalize_pet(pet, brain, method="suvr")
    with pytest.raises(ValueError, match="shape"):
        normalize_pet(pet, brain[:-1])
    bad = pet.copy()
    bad[5, 5, 5] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        normalize_pet(bad, brain)
