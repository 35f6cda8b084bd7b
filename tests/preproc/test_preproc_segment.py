"""N4 bias correction and GM/WM/CSF probability maps on simulated heads."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from pseudopet_bids.preproc._ants import dice
from pseudopet_bids.preproc.segment import bias_correct, segment_tissues


def _labels(maps, inside):
    stack = np.stack([np.asarray(maps[k].dataobj) for k in ("CSF", "GM", "WM")])
    lab = np.argmax(stack, axis=0)
    lab[~inside] = -1
    return stack, lab


@pytest.fixture(scope="module")
def biased_head(phantoms):
    return phantoms.make_head(voxel_mm=2.0, seed=4, bias=0.35)


def test_probabilities_sum_to_one_inside_and_zero_outside(head3mm):
    t1, truth, _ = head3mm
    maps = segment_tissues(t1, truth["mask"], seed=0)
    assert set(maps) == {"GM", "WM", "CSF"}
    inside = np.asarray(truth["mask"].dataobj) > 0
    total = sum(np.asarray(m.dataobj) for m in maps.values())
    assert np.allclose(total[inside], 1.0, atol=1e-5)
    assert np.all(total[~inside] == 0)
    for m in maps.values():
        assert m.get_data_dtype() == np.float32 and m.shape == t1.shape


def test_gm_dice_on_a_biased_head(biased_head):
    t1, truth, _ = biased_head
    inside = np.asarray(truth["mask"].dataobj) > 0
    t_gm, t_wm = (np.asarray(truth[k].dataobj) for k in ("GM", "WM"))
    t_lab = np.argmax(np.stack([np.clip(1 - t_gm - t_wm, 0, 1), t_gm, t_wm]), axis=0)
    _, lab = _labels(segment_tissues(t1, truth["mask"], seed=0), inside)
    assert dice(lab == 1, (t_lab == 1) & inside) > 0.85
    assert dice(lab == 2, (t_lab == 2) & inside) > 0.8
    # without N4 the bias field costs accuracy: the correction must be doing something
    _, raw = _labels(segment_tissues(t1, truth["mask"], bias_correction=False), inside)
    assert dice(lab == 1, (t_lab == 1) & inside) > dice(raw == 1, (t_lab == 1) & inside)


def test_priors_are_used_and_deterministic(head3mm):
    t1, truth, _ = head3mm
    priors = {k: truth[k] for k in ("GM", "WM", "CSF")}
    a = segment_tissues(t1, truth["mask"], seed=0, priors=priors)
    b = segment_tissues(t1, truth["mask"], seed=0, priors=priors)
    assert np.array_equal(np.asarray(a["GM"].dataobj), np.asarray(b["GM"].dataobj))
    inside = np.asarray(truth["mask"].dataobj) > 0
    gm = np.asarray(a["GM"].dataobj) >= 0.5
    assert dice(gm, (np.asarray(truth["GM"].dataobj) >= 0.5) & inside) > 0.85


def test_bias_correct_flattens_a_known_field(biased_head):
    t1, truth, _ = biased_head
    inside = np.asarray(truth["mask"].dataobj) > 0
    wm = (np.asarray(truth["WM"].dataobj) > 0.9) & inside
    before = np.asarray(t1.dataobj)[wm]
    after = np.asarray(bias_correct(t1, truth["mask"]).dataobj)[wm]
    # pure WM should be one intensity: the spread left by the bias field must shrink
    assert after.std() / after.mean() < 0.6 * before.std() / before.mean()


def test_atropos_method_runs(head3mm):
    t1, truth, _ = head3mm
    maps = segment_tissues(t1, truth["mask"], method="atropos", seed=0)
    inside = np.asarray(truth["mask"].dataobj) > 0
    total = sum(np.asarray(m.dataobj) for m in maps.values())
    assert np.allclose(total[inside], 1.0, atol=1e-4)
    gm = np.asarray(maps["GM"].dataobj) >= 0.5
    assert dice(gm, (np.asarray(truth["GM"].dataobj) >= 0.5) & inside) > 0.6


def test_bad_inputs(head3mm):
    t1, truth, _ = head3mm
    small = nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), t1.affine)
    with pytest.raises(ValueError, match="differs"):
        segment_tissues(t1, small)
    with pytest.raises(ValueError, match="priors lack"):
        segment_tissues(t1, truth["mask"], priors={"GM": truth["GM"]})
    with pytest.raises(ValueError, match="unknown segmentation method"):
        segment_tissues(t1, truth["mask"], method="fast")
