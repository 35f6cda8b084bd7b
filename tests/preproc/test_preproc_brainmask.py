"""Brain masks of raw simulated heads (both methods)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from pseudopet_bids.errors import DataError
from pseudopet_bids.preproc._ants import dice
from pseudopet_bids.preproc import brainmask
from pseudopet_bids.preproc.brainmask import (MIN_NEIGHBOUR_CORRELATION, _implausible,
                                              brain_mask, neighbour_correlation)


def test_deepbet_on_a_2mm_head(head2mm):
    t1, truth, _ = head2mm
    mask = brain_mask(t1, "deepbet", omp_nthreads=2)
    assert mask.get_data_dtype() == np.uint8
    assert mask.shape == t1.shape and np.allclose(mask.affine, t1.affine)
    data = np.asarray(mask.dataobj)
    assert set(np.unique(data)) <= {0, 1}
    assert dice(data > 0, np.asarray(truth["mask"].dataobj) > 0) > 0.95


def test_template_method_on_a_3mm_head(head3mm):
    t1, truth, _ = head3mm
    mask = brain_mask(t1, "template", omp_nthreads=2)
    assert mask.get_data_dtype() == np.uint8
    assert dice(np.asarray(mask.dataobj) > 0, np.asarray(truth["mask"].dataobj) > 0) > 0.93


def test_bad_inputs(head3mm):
    t1, _, _ = head3mm
    with pytest.raises(ValueError, match="unknown brain-mask method"):
        brain_mask(t1, "bet")
    four_d = nib.Nifti1Image(np.zeros(t1.shape + (2,), np.float32), t1.affine)
    with pytest.raises(ValueError, match="3D"):
        brain_mask(four_d)


def test_implausible_template_masks_are_recognised(head3mm):
    t1, truth, _ = head3mm
    head = np.asarray(t1.dataobj, dtype=np.float32)
    good = np.asarray(truth["mask"].dataobj) > 0
    ml = good.sum() * 27 / 1000.0
    assert _implausible(good, head, t1.affine, ml) is None
    assert "volume" in _implausible(ndimage.binary_erosion(good, iterations=5), head, t1.affine, ml)
    # the same brain slid 45 mm down towards the neck
    low = np.roll(good, -15, axis=2)
    assert _implausible(low, head, t1.affine, ml) is not None
    assert _implausible(np.zeros_like(good), head, t1.affine, ml) == "empty mask"


def test_template_method_retries_a_failed_registration(head3mm, monkeypatch, caplog):
    """A start 60 mm off puts the first registration in a wrong minimum; the retry recovers."""
    t1, truth, _ = head3mm
    monkeypatch.setattr(brainmask, "TEMPLATE_STARTS",
                        (((0.0, 0.0, -60.0), 0),) + brainmask.TEMPLATE_STARTS[:1])
    calls = []
    real = brainmask._register_template_mask
    monkeypatch.setattr(brainmask, "_register_template_mask",
                        lambda *a: calls.append(a[3]) or real(*a))
    with caplog.at_level("WARNING"):
        mask = brain_mask(t1, "template", omp_nthreads=2)
    assert len(calls) == 2 and "implausible" in caplog.text
    assert dice(np.asarray(mask.dataobj) > 0, np.asarray(truth["mask"].dataobj) > 0) > 0.93


def test_template_method_gives_up_with_a_clear_message(head3mm, monkeypatch):
    t1, _, _ = head3mm
    monkeypatch.setattr(brainmask, "_register_template_mask",
                        lambda t1, n, s, o: np.zeros(t1.shape, bool))
    with pytest.raises(DataError, match="every start.*--skullstrip deepbet"):
        brain_mask(t1, "template")


def test_neighbour_correlation_tells_a_brain_from_noise(head3mm):
    t1, truth, _ = head3mm
    brain = np.asarray(truth["mask"].dataobj) > 0
    assert neighbour_correlation(np.asarray(t1.dataobj), brain) > 0.6
    noise = np.random.default_rng(0).uniform(1, 100, t1.shape)
    assert abs(neighbour_correlation(noise, brain)) < 0.05 < MIN_NEIGHBOUR_CORRELATION
    assert np.isnan(neighbour_correlation(np.ones(t1.shape), brain))  # constant: not judged


@pytest.mark.parametrize("what", ["noise", "no head"])
def test_deepbet_finds_no_brain_in_noise(what):
    """deepbet outlines a 650 ml "brain" in a 64-voxel cube of noise (refused as noise), and
    fails inside its box net on a small patch of noise in an empty volume (refused: no head)."""
    rng = np.random.default_rng(0)
    if what == "noise":
        data = rng.uniform(1, 100, (64, 64, 64))
    else:
        data = np.zeros((64, 64, 64))
        data[:8, :8, :8] = rng.uniform(1, 100, (8, 8, 8))
    t1 = nib.Nifti1Image(data.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    with pytest.raises(DataError, match="only noise" if what == "noise" else "no head") as err:
        brain_mask(t1, "deepbet", omp_nthreads=2)
    assert err.value.role == "t1w" and "--skullstrip template" in str(err.value)
