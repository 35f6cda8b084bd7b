"""Hemispheric asymmetry (detect/asymmetry.py)."""

from __future__ import annotations

import numpy as np
import pytest

from pseudopet_bids.detect import asymmetry as asy


def test_mirror_image_gives_zero_and_a_lower_side_a_negative_index():
    values = np.ones((6, 3, 3), np.float32)
    valid = np.ones(values.shape, bool)
    ai, both = asy.asymmetry_map(values, valid)
    assert both.all() and np.allclose(ai, 0)
    values[:3] = 0.9  # low x side 10 % lower
    ai, _ = asy.asymmetry_map(values, valid)
    assert np.allclose(ai[:3], 200 * (0.9 - 1) / 1.9, atol=1e-5)
    assert np.allclose(ai[3:], -ai[:3][::-1])
    valid[5] = False  # the mirror of x = 0 is missing: undefined there
    _, both = asy.asymmetry_map(values, valid)
    assert not both[0].any() and not both[5].any() and both[1].all()


def test_the_template_grid_must_be_centred():
    asy.mirror_axis_flip(np.diag([2.0, 2, 2, 1]) + np.array(
        [[0, 0, 0, -98.0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]), (99, 5, 5))
    off = np.diag([2.0, 2, 2, 1])
    off[0, 3] = -90.0
    with pytest.raises(ValueError, match="centred"):
        asy.mirror_axis_flip(off, (99, 5, 5))


def test_single_case_z_matches_crawford_howell():
    controls = np.array([0.0, 1.0, -1.0, 0.5, -0.5])
    z = asy.single_case_z(-3.0, controls)
    assert z < -2.0
    assert asy.single_case_z(0.0, controls) == pytest.approx(0.0)
    assert np.isnan(asy.single_case_z(1.0, np.array([1.0, 2.0])))
    assert np.isnan(asy.single_case_z(1.0, np.array([1.0, 1.0, 1.0])))


def test_reference_region_values_leave_one_out():
    maps = {k: (np.full((4, 2, 2), v, np.float32), np.ones((4, 2, 2), bool))
            for k, v in (("a", 1.0), ("b", 2.0), ("c", 3.0))}
    maps["c"][1][0] = False
    ref = asy.AsymmetryReference.from_maps(maps)
    vox = np.array([0, 1, 15])
    assert ref.region_values(vox) == pytest.approx([1.0, 2.0, 3.0])
    assert ref.region_values(vox, "b") == pytest.approx([1.0, 3.0])
    assert np.isnan(ref.region_values(np.array([0, 1]))[2])
    mean, sd, n = ref.voxel_stats("a")
    assert mean[15] == pytest.approx(2.5) and n[0] == 1 and n[15] == 2


def test_tier_criterion_uses_controls_when_there_are_some():
    assert asy.is_asymmetric(-3.0, -2.5)
    assert not asy.is_asymmetric(-30.0, -1.0)  # controls say this much is normal here
    assert asy.is_asymmetric(-12.0, float("nan"))
    assert not asy.is_asymmetric(-8.0, float("nan"))


class _OneHemisphere:
    """A registration that maps the subject onto the left half of the template grid only
    (a brain half outside the field of view)."""

    t1_affine = np.eye(4)

    def to_template(self, img, interpolation="linear", reference=None):
        import nibabel as nib

        data = np.zeros(reference.shape, np.float32)
        data[: reference.shape[0] // 2 - 2] = 1.0
        return nib.Nifti1Image(data, reference.affine)


def test_a_brain_without_homologues_is_a_data_error_naming_the_pet():
    from pseudopet_bids.errors import DataError

    with pytest.raises(DataError, match="mirror-image homologue") as info:
        asy.subject_asymmetry(np.ones((4, 4, 4), np.float32), np.ones((4, 4, 4), bool),
                              _OneHemisphere())
    assert info.value.role == "pet"
    assert "both" in info.value.fix
