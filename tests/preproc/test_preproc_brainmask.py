"""Brain masks of raw simulated heads (both methods)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from pseudopet_bids.preproc._ants import dice
from pseudopet_bids.preproc.brainmask import brain_mask


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
