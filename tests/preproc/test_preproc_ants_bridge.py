"""nibabel <-> ANTs conversions and the LPS/RAS handling of transforms."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from pseudopet_bids.preproc._ants import ants_affine, box_affine, dice, from_ants, mask_box, to_ants
from pseudopet_bids.preproc.coregister import ants_matrix_to_ras, ras_to_ants_transform


@pytest.mark.parametrize("affine", [
    np.diag([1.0, 1.0, 1.0, 1.0]),
    np.array([[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 2.5, -72], [0, 0, 0, 1]]),
    np.array([[0, 0, -1.2, 80], [-1.0, 0, 0, 100], [0, -1.0, 0, 120], [0, 0, 0, 1]]),
])
def test_round_trip_keeps_affine_and_data(affine):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(7, 8, 9)).astype(np.float32)
    img = nib.Nifti1Image(data, affine)
    a = to_ants(img)
    assert np.allclose(ants_affine(a), affine)
    back = from_ants(a)
    assert np.allclose(back.affine, affine)
    assert np.array_equal(back.get_fdata(dtype=np.float32), data)


def test_ras_matrix_round_trip_through_ants_transform():
    from scipy.spatial.transform import Rotation

    mat = np.eye(4)
    mat[:3, :3] = Rotation.from_euler("xyz", [5, -3, 8], degrees=True).as_matrix()
    mat[:3, 3] = [4.0, -7.0, 10.0]
    tx = ras_to_ants_transform(mat)
    assert np.allclose(ants_matrix_to_ras(tx.parameters, tx.fixed_parameters), mat)
    # and ITK applies it to LPS points as the RAS matrix does to RAS points
    p_ras = np.array([12.0, -30.0, 25.0])
    flip = np.array([-1.0, -1.0, 1.0])
    q_lps = np.asarray(tx.apply_to_point(tuple(p_ras * flip)))
    assert np.allclose(q_lps * flip, (mat @ np.append(p_ras, 1))[:3], atol=1e-4)


def test_mask_box_and_dice():
    mask = np.zeros((20, 20, 20), bool)
    mask[5:10, 6:12, 7:9] = True
    box = mask_box(mask, np.diag([2.0, 2.0, 2.0, 1.0]), 4.0)
    assert box == (slice(3, 12), slice(4, 14), slice(5, 11))
    aff = box_affine(np.diag([2.0, 2.0, 2.0, 1.0]), box)
    assert np.allclose(aff[:3, 3], [6.0, 8.0, 10.0])
    assert dice(mask, mask) == 1.0
    assert dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    with pytest.raises(ValueError):
        mask_box(np.zeros((3, 3, 3), bool), np.eye(4), 1.0)
