"""The model's intensity scaling and grid geometry."""

from __future__ import annotations

import numpy as np
import pytest

from pseudopet_bids.errors import DataError
from pseudopet_bids.models.presets import GRIDS, ModelGrid
from pseudopet_bids.synthesis.modelspace import (MRI_PERCENTILE, PET_MAX, SCALING, grid_image,
                                                 scale_mri, scale_pet, unscale_pet)


def _brain(shape=(12, 14, 10)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[2:10, 3:11, 2:8] = True
    return mask


# --------------------------------------------------------------------------- T1w


def test_scale_mri_range_background_and_percentile(rng):
    mask = _brain()
    t1 = rng.uniform(50, 150, mask.shape).astype(np.float32)
    t1[~mask] = 1000.0                          # bright skull: ignored by the percentile
    out = scale_mri(t1, mask)
    assert out.dtype == np.float32 and out.shape == t1.shape
    assert np.all(out[~mask] == -1.0)
    assert out.min() >= -1.0 and out.max() <= 1.0
    hi = np.percentile(t1[mask], MRI_PERCENTILE)
    np.testing.assert_allclose(out[mask], 2 * np.clip(t1[mask] / hi, 0, 1) - 1, atol=1e-6)
    # the brightest 0.5 % of the brain saturate, the rest does not
    saturated = np.mean(out[mask] >= 1.0 - 1e-6)
    assert 0 < saturated <= 1 - MRI_PERCENTILE / 100 + 1 / mask.sum()
    # half the percentile value maps to 0
    t1[4, 5, 4] = hi / 2
    assert scale_mri(t1, mask)[4, 5, 4] == pytest.approx(0.0, abs=1e-3)


def test_scale_mri_is_invariant_to_the_t1w_unit(rng):
    mask = _brain()
    t1 = rng.uniform(10, 90, mask.shape)
    np.testing.assert_allclose(scale_mri(t1, mask), scale_mri(t1 * 37.5, mask), atol=1e-6)


def test_scale_mri_refuses_unusable_input():
    mask = _brain()
    with pytest.raises(ValueError, match="empty"):
        scale_mri(np.ones(mask.shape), np.zeros(mask.shape, bool))
    with pytest.raises(DataError, match="not positive"):  # a data problem: names the T1w
        scale_mri(-np.ones(mask.shape), mask)


# --------------------------------------------------------------------------- PET


def test_scale_pet_round_trip(rng):
    mask = _brain()
    pet = rng.uniform(0.01, PET_MAX - 0.01, mask.shape).astype(np.float32)
    scaled = scale_pet(pet, mask)
    assert scaled.dtype == np.float32
    assert np.all(scaled[~mask] == -1.0)
    assert scaled.min() >= -1.0 and scaled.max() <= 1.0
    np.testing.assert_allclose(unscale_pet(scaled)[mask], pet[mask], rtol=1e-5, atol=1e-6)
    assert np.all(unscale_pet(scaled)[~mask] == 0.0)
    # the GM median (1) sits at a fixed model value, and the scale is linear
    assert float(scale_pet(np.ones(mask.shape), mask)[mask][0]) == pytest.approx(
        2 / PET_MAX - 1)


def test_scale_pet_clips_outside_the_range():
    mask = np.ones((2, 2, 2), bool)
    pet = np.array([-1.0, 0.0, PET_MAX, 3 * PET_MAX, 1.0, 0.5, 2.0, 1.5]).reshape(2, 2, 2)
    scaled = scale_pet(pet, mask).ravel()
    np.testing.assert_allclose(scaled[:4], [-1, -1, 1, 1])
    assert unscale_pet(np.array([-1.0, 1.0])).tolist() == [0.0, PET_MAX]
    assert unscale_pet(np.array([2.0])).dtype == np.float32


def test_scaling_record_names_the_constants():
    assert SCALING["pet_max"] == PET_MAX and SCALING["mri_percentile"] == MRI_PERCENTILE
    assert SCALING["background"] == -1.0


# --------------------------------------------------------------------------- grid


@pytest.mark.parametrize("shape", [(5, 7, 9), (4, 6, 8), (32, 40, 28), (7, 4, 1)])
@pytest.mark.parametrize("voxel", [1.0, 6.0, 2.5])
def test_grid_affine_centres_the_box(shape, voxel):
    grid = ModelGrid(voxel, shape, (3.0, -18.0, 8.5))
    aff = grid.affine()
    assert aff.shape == (4, 4)
    np.testing.assert_allclose(aff[:3, :3], np.eye(3) * voxel)
    np.testing.assert_allclose(aff[3], [0, 0, 0, 1])
    middle = (np.asarray(shape, float) - 1) / 2             # a voxel centre, or between two
    np.testing.assert_allclose((aff @ np.append(middle, 1))[:3], grid.centre)
    # the first and last voxel centres are symmetric about the centre
    first = aff[:3, 3]
    last = (aff @ np.append(np.asarray(shape) - 1, 1))[:3]
    np.testing.assert_allclose((first + last) / 2, grid.centre)
    np.testing.assert_allclose(last - first, (np.asarray(shape) - 1) * voxel)


def test_grid_dict_round_trip_and_image():
    grid = GRIDS["tiny"]
    assert ModelGrid.from_dict(grid.to_dict()) == grid
    img = grid_image(grid)
    assert img.shape == grid.shape
    np.testing.assert_allclose(img.affine, grid.affine())
    assert np.all(np.asarray(img.dataobj) == 0)
    # the default box is centred on the template brain (0, -18, 8)
    assert grid.centre == (0.0, -18.0, 8.0)
