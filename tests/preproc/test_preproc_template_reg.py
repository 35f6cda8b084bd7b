"""T1w → template registration: directions of images, points and written fields."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from pseudopet_bids import resources
from pseudopet_bids.preproc._ants import dice, to_ants


def test_template_mask_lands_on_the_true_brain(head3mm, registration3mm):
    _, truth, _ = head3mm
    mask = registration3mm.to_t1(resources.load_template("mask"), "linear")
    assert mask.shape == truth["mask"].shape and mask.get_data_dtype() == np.float32
    assert dice(np.asarray(mask.dataobj) >= 0.5, np.asarray(truth["mask"].dataobj) > 0) > 0.93
    gm = np.asarray(registration3mm.to_t1(resources.load_template("GM"), "linear").dataobj)
    assert dice(gm >= 0.5, np.asarray(truth["GM"].dataobj) >= 0.5) > 0.75


def test_labels_keep_their_dtype_and_values(registration3mm):
    lobes = registration3mm.to_t1(resources.load_lobe_atlas(), "nearest")
    assert lobes.get_data_dtype() == np.int16
    values = set(np.unique(np.asarray(lobes.dataobj)).tolist())
    assert values <= set(range(10)) and len(values) >= 9
    full = registration3mm.to_t1(resources.load_lobe_atlas(), "nearest", crop=False)
    assert np.array_equal(np.asarray(full.dataobj), np.asarray(lobes.dataobj))
    with pytest.raises(ValueError, match="interpolation"):
        registration3mm.to_t1(resources.load_lobe_atlas(), "cubic")


def test_points_follow_the_known_transform(head3mm, registration3mm):
    _, truth, moved = head3mm
    # template points inside the brain, and where the phantom put them in T1w space
    rng = np.random.default_rng(0)
    tmask = resources.load_template("mask")
    ijk = np.argwhere(np.asarray(tmask.dataobj) > 0)
    y = nib.affines.apply_affine(tmask.affine, ijk[rng.choice(len(ijk), 300, replace=False)])
    x = nib.affines.apply_affine(moved, y)
    err = np.linalg.norm(registration3mm.points_to_template(x) - y, axis=1)
    print(f"T1w -> template point error: {err.mean():.2f} mm mean, {err.max():.2f} mm max")
    # 3 mm phantom: SyN adds ~1-3 mm of spurious local warp to an affine-only truth
    assert err.mean() < 2.0 and np.percentile(err, 95) < 4.5
    back = registration3mm.points_to_t1(registration3mm.points_to_template(x))
    assert np.abs(back - x).max() < 0.5
    assert registration3mm.points_to_template(np.zeros((0, 3))).shape == (0, 3)
    with pytest.raises(ValueError, match="N, 3"):
        registration3mm.points_to_template(np.zeros((4, 2)))


def test_written_fields_match_the_transform_lists(head3mm, registration3mm, tmp_path):
    import ants

    t1, _, _ = head3mm
    fwd = tmp_path / "from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.nii.gz"
    inv = tmp_path / "from-MNI152NLin2009aSym_to-T1w_mode-image_xfm.nii.gz"
    registration3mm.write(fwd, inv)
    for path in (fwd, inv):
        img = nib.load(path)
        assert img.ndim == 5 and img.shape[3:] == (1, 3)
        assert img.header.get_intent()[0] == "vector"
    # the inverse field resamples template images onto the T1w grid like to_t1(crop=False)
    gm = resources.load_template("GM")
    ref = to_ants(nib.Nifti1Image(np.zeros(t1.shape, np.float32), t1.affine))
    via_file = ants.apply_transforms(ref, to_ants(gm), [str(inv)]).numpy()
    via_list = np.asarray(registration3mm.to_t1(gm, "linear", crop=False).dataobj)
    assert np.abs(via_file - via_list).mean() < 2e-3
    # the forward field resamples the T1w into template space like to_template()
    tpl = resources.load_template("mask")
    via_file = ants.apply_transforms(to_ants(tpl), to_ants(t1), [str(fwd)]).numpy()
    via_list = np.asarray(registration3mm.to_template(t1).dataobj)
    assert np.abs(via_file - via_list).mean() < 2e-3 * float(np.abs(via_list).max())


def test_rejects_a_mask_on_another_grid(head3mm, tmp_path):
    from pseudopet_bids.preproc.template_reg import register_t1_to_template

    t1, _, _ = head3mm
    with pytest.raises(ValueError, match="grid"):
        register_t1_to_template(t1, nib.Nifti1Image(np.ones((3, 3, 3), np.uint8), t1.affine),
                                tmp_path)
