"""Subject calibration of a learned prediction (synthesis/calibrate.py)."""

from __future__ import annotations

import numpy as np
import pytest

from pseudopet_bids.synthesis.calibrate import calibrate_to_subject, partition

VOX = (2.0, 2.0, 2.0)


def _head(shape=(40, 32, 24)):
    """A box brain: GM shell, WM core; AAL frontal (front half) and occipital (back half),
    left (x < half) and right labels."""
    mask = np.zeros(shape, bool)
    mask[3:-3, 3:-3, 3:-3] = True
    inner = np.zeros(shape, bool)  # inside the CSF rim
    inner[5:-5, 5:-5, 5:-5] = True
    core = np.zeros(shape, bool)
    core[9:-9, 9:-9, 9:-9] = True
    gm = np.where(inner & ~core, 0.9, 0.0).astype(np.float32)
    wm = np.where(core, 0.95, np.where(inner, 0.05, 0.0)).astype(np.float32)
    csf = np.where(mask, 1.0 - gm - wm, 0.0).clip(0).astype(np.float32)
    aal = np.zeros(shape, np.int16)
    half_x, half_y = shape[0] // 2, shape[1] // 2
    aal[:half_x, half_y:] = 3   # Frontal_Sup_L
    aal[half_x:, half_y:] = 4   # Frontal_Sup_R
    aal[:half_x, :half_y] = 51  # Occipital_Mid_L
    aal[half_x:, :half_y] = 52  # Occipital_Mid_R
    aal[~(mask & (gm > 0))] = 0
    rng = np.random.default_rng(0)
    # a learned prediction with within-region texture the tissue maps do not have
    pseudo = (gm * 1.2 + wm * 0.4 + csf * 0.1) * (1 + 0.1 * rng.standard_normal(shape))
    pseudo = np.where(mask, pseudo, 0).astype(np.float32)
    return mask, {"GM": gm, "WM": wm, "CSF": csf}, aal, pseudo


def test_partition_is_smooth_and_sums_to_one_in_the_brain():
    mask, tissues, aal, _ = _head()
    weights, names = partition(tissues, mask, aal, VOX, 6.0)
    assert names[-2:] == ["WM", "CSF"] and {"gm:frontal", "gm:occipital"} <= set(names)
    total = np.sum(weights, axis=0)
    np.testing.assert_allclose(total[mask], 1.0, atol=1e-5)
    assert np.all(total[~mask] == 0)
    frontal = weights[names.index("gm:frontal")]
    # blurred: the frontal weight fades across the frontal/occipital border of the GM shell
    row = frontal[6, :, 12]  # in the GM shell
    assert 0.05 < row[15] < 0.95 and row[25] > row[15] > row[8]


def test_gains_recover_regional_levels_and_identity_is_kept():
    mask, tissues, aal, pseudo = _head()
    same, gain, info = calibrate_to_subject(pseudo, pseudo, tissues, mask, VOX, aal)
    np.testing.assert_allclose(list(info["Gains"].values()), 1.0, atol=1e-3)
    np.testing.assert_allclose(same[mask], pseudo[mask], rtol=2e-3)
    weights, names = partition(tissues, mask, aal, VOX, 6.0)
    truth = {"gm:frontal": 0.8, "gm:occipital": 1.15, "WM": 1.05, "CSF": 1.0}
    field = sum(truth.get(n, 1.0) * w for n, w in zip(names, weights))
    pet = pseudo * np.where(mask, field, 1.0)
    calibrated, gain, info = calibrate_to_subject(pseudo, pet, tissues, mask, VOX, aal)
    for name, value in truth.items():
        assert info["Gains"][name] == pytest.approx(value, abs=0.01), name
    np.testing.assert_allclose(calibrated[mask], pet[mask], rtol=0.01)
    assert np.all(gain[~mask] == 1.0) and info["Method"] == "compartments"


def test_a_focal_deficit_is_not_absorbed_and_stays_unilateral():
    mask, tissues, aal, pseudo = _head()
    pet = pseudo.copy()
    focus = np.zeros(mask.shape, bool)
    focus[5:9, 20:28, 8:16] = True  # part of the left frontal GM
    pet[focus] *= 0.7
    calibrated, _, info = calibrate_to_subject(pseudo, pet, tissues, mask, VOX, aal)
    assert info["Gains"]["gm:frontal"] == pytest.approx(1.0, abs=0.02)
    assert np.mean(pet[focus] - calibrated[focus]) < -0.2 * np.mean(pseudo[focus])
    # a whole left frontal deficit: left and right share a gain, half of it stays visible
    left_frontal = aal == 3
    pet = pseudo.copy()
    pet[left_frontal] *= 0.8
    calibrated, _, _ = calibrate_to_subject(pseudo, pet, tissues, mask, VOX, aal)
    assert np.mean((pet - calibrated)[left_frontal]) < np.mean((pet - calibrated)[aal == 4])


def test_without_an_atlas_one_gm_gain_and_shape_checks():
    mask, tissues, _, pseudo = _head()
    _, _, info = calibrate_to_subject(pseudo, pseudo * 1.3, tissues, mask, VOX, None)
    assert set(info["Gains"]) == {"gm:GM", "WM", "CSF"}
    assert all(v == pytest.approx(1.3, abs=0.01) for v in info["Gains"].values())
    with pytest.raises(ValueError, match="shape"):
        calibrate_to_subject(pseudo[:-1], pseudo, tissues, mask, VOX)
    with pytest.raises(ValueError, match="empty"):
        calibrate_to_subject(pseudo, pseudo, tissues, np.zeros_like(mask), VOX)


def test_mesial_temporal_shares_the_temporal_gain():
    """The commonest seat of a focus, and smaller than many foci: no gain of its own."""
    mask, tissues, aal, _ = _head()
    aal = aal.copy()
    aal[aal == 51] = 37  # Hippocampus_L in place of Occipital_Mid_L
    aal[aal == 52] = 38  # Hippocampus_R
    _, names = partition(tissues, mask, aal, VOX, 6.0)
    assert "gm:temporal" in names and "gm:mesial-temporal" not in names
