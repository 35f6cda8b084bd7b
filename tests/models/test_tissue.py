"""Non-learned tissue-model baseline."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pseudopet_bids.models.tissue import COMPARTMENTS, TissueModel, compartment_map, irls_nnls
from pseudopet_bids.resources import aal_names

VOXEL = (2.0, 2.0, 2.0)
FWHM = 6.0
AAL = {name: value for value, name in aal_names().items()}
# Ground-truth uptakes: GM per compartment, WM, CSF.
TRUTH = {"left-frontal": 1.0, "right-frontal": 1.1, "left-temporal": 0.9,
         "right-occipital": 1.2, "deep-gm": 1.3, "WM": 0.3, "CSF": 0.05}


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def phantom():
    """Spherical head: GM shell in four AAL quadrants, WM core, CSF ventricle, deep GM nucleus."""
    shape = (44, 44, 44)
    grid = np.indices(shape).astype(np.float32) - 21.5
    r = np.sqrt((grid ** 2).sum(0))
    brain = r < 19.0
    inner = _sigmoid((13.0 - r) / 0.6)  # WM + deep structures
    gm = (_sigmoid((18.0 - r) / 0.6) - inner) * brain
    vent = _sigmoid((3.5 - np.sqrt(((grid - [[[[0]]], [[[4]]], [[[0]]]]) ** 2).sum(0))) / 0.6)
    nucleus = _sigmoid((4.0 - np.sqrt(((grid - [[[[6]]], [[[-5]]], [[[0]]]]) ** 2).sum(0))) / 0.6)
    gm = gm + nucleus * inner
    csf = vent * inner * (1 - nucleus)
    wm = inner * (1 - nucleus) - csf
    csf = csf + (1 - gm - wm - csf) * brain * (r > 17.0)  # sulcal CSF at the surface
    labels = np.zeros(shape, np.int16)
    x, y = grid[0], grid[1]
    labels[(x < 0) & (y >= 0)] = AAL["Frontal_Sup_L"]
    labels[(x >= 0) & (y >= 0)] = AAL["Frontal_Mid_R"]
    labels[(x < 0) & (y < 0)] = AAL["Temporal_Mid_L"]
    labels[(x >= 0) & (y < 0)] = AAL["Occipital_Mid_R"]
    labels[nucleus > 0.5] = AAL["Thalamus_R"]
    labels[~brain] = 0
    tissues = {"GM": gm.astype(np.float32), "WM": np.clip(wm, 0, 1).astype(np.float32),
               "CSF": np.clip(csf, 0, 1).astype(np.float32)}
    return tissues, brain, labels, grid


def synthetic_pet(tissues, brain, labels, drop=None, noise=0.0, rng=None):
    comp, names = compartment_map(labels, fill_mask=brain & (tissues["GM"] > 0),
                                  voxel_sizes=VOXEL)
    g = np.array([TRUTH.get(n, 0.0) for n in names], np.float32)
    uptake = g[comp] * tissues["GM"] + TRUTH["WM"] * tissues["WM"] + TRUTH["CSF"] * tissues["CSF"]
    if drop is not None:
        uptake = np.where(drop, uptake - 0.3 * g[comp] * tissues["GM"], uptake)
    sigma = FWHM / 2.3548 / VOXEL[0]
    pet = ndimage.gaussian_filter(uptake.astype(np.float32), sigma, mode="constant")
    if noise:
        pet = pet + rng.normal(0, noise, pet.shape).astype(np.float32)
    return np.where(brain, pet, 0).astype(np.float32) * 1000.0  # arbitrary units


def focus_in_left_temporal(tissues, grid, fraction=0.10):
    """A ball in the left-temporal GM holding about ``fraction`` of its GM mass."""
    lt = (grid[0] < 0) & (grid[1] < 0) & (tissues["GM"] > 0)
    centre = np.array([-9.0, -9.0, 9.0])
    d = np.sqrt(((grid - centre[:, None, None, None]) ** 2).sum(0))
    for radius in np.arange(3.0, 15.0, 0.25):
        ball = d < radius
        share = tissues["GM"][ball & lt].sum() / tissues["GM"][lt].sum()
        if share >= fraction:
            return ball & lt
    raise AssertionError("focus construction failed")


@pytest.mark.parametrize("loss", ["tukey", "ols"])
def test_noiseless_exact_fit(loss):
    tissues, brain, labels, _ = phantom()
    pet = synthetic_pet(tissues, brain, labels)
    model = TissueModel(pet_fwhm_mm=FWHM, loss=loss, max_samples=5000)  # stride subsample
    pseudo, info = model.predict(pet, tissues, brain, VOXEL, labels)
    assert info["FractionRejected"] < 0.01  # exact data: (almost) nothing is an outlier
    assert info["SampleStride"] > 1
    assert pseudo.dtype == np.float32 and pseudo.shape == pet.shape
    assert np.all(pseudo[~brain] == 0)
    np.testing.assert_allclose(pseudo[brain], pet[brain], atol=2e-3 * pet.max())
    for name, value in TRUTH.items():
        assert info["Coefficients"][name] == pytest.approx(1000 * value, rel=1e-3), name
    # Compartments absent from this phantom are not fitted.
    assert info["Coefficients"]["left-parietal"] is None


def test_robust_fit_ignores_focus_ols_does_not(rng):
    tissues, brain, labels, grid = phantom()
    focus = focus_in_left_temporal(tissues, grid)
    pet = synthetic_pet(tissues, brain, labels, drop=focus, noise=0.02, rng=rng)
    robust, info = TissueModel(pet_fwhm_mm=FWHM).predict(pet, tissues, brain, VOXEL, labels)
    ols, info_ols = TissueModel(pet_fwhm_mm=FWHM, loss="ols").predict(
        pet, tissues, brain, VOXEL, labels)
    for name, value in TRUTH.items():
        # CSF uptake is small: compare it on the scale of the GM uptake.
        tol = {"rel": 0.03} if name != "CSF" else {"abs": 10.0}
        assert info["Coefficients"][name] == pytest.approx(1000 * value, **tol), name
    err_robust = abs(info["Coefficients"]["left-temporal"] / 900 - 1)
    err_ols = abs(info_ols["Coefficients"]["left-temporal"] / 900 - 1)
    assert err_robust < 0.015
    assert info_ols["Coefficients"]["left-temporal"] < 900 * 0.975  # OLS is pulled down
    assert err_ols > 2 * err_robust
    assert info["Converged"] and info["Iterations"] > 1
    assert 0.0 < info["FractionDownweighted"] < 0.2
    # The residual in the focus is strongly negative relative to the fit's noise scale.
    core = focus & (tissues["GM"] > 0.5)
    resid = (pet - robust)[core].mean()
    assert resid < -5 * info["ResidualScale"]
    assert resid < (pet - ols)[core].mean()  # OLS hides part of the deficit
    assert abs((pet - robust)[brain & ~ndimage.binary_dilation(focus, iterations=4)].mean()) \
        < 0.5 * info["ResidualScale"]


def test_global_model_without_atlas(rng):
    tissues, brain, labels, _ = phantom()
    pet = synthetic_pet(tissues, brain, labels, noise=0.01, rng=rng)
    pseudo, info = TissueModel().predict(pet, tissues, brain, VOXEL)
    assert set(info["Coefficients"]) == {"GM", "WM", "CSF"}
    assert 900 < info["Coefficients"]["GM"] < 1300


def test_symmetric_model_shares_pairs():
    tissues, brain, labels, _ = phantom()
    pet = synthetic_pet(tissues, brain, labels)
    _, info = TissueModel(symmetric=True).predict(pet, tissues, brain, VOXEL, labels)
    assert "frontal" in info["Coefficients"] and "left-frontal" not in info["Coefficients"]
    assert 1000 < info["Coefficients"]["frontal"] < 1100


def test_compartment_map():
    values = [AAL[n] for n in ("Hippocampus_L", "Thalamus_R", "Temporal_Mid_L", "Insula_R",
                               "Cerebelum_6_L", "Vermis_3", "Fusiform_R", "Precuneus_L")]
    comp, names = compartment_map(np.array(values + [0]).reshape(1, 1, -1))
    got = [names[c] for c in comp.ravel()]
    assert names == COMPARTMENTS
    assert got == ["mesial-temporal", "deep-gm", "left-temporal", "other", "cerebellum",
                   "cerebellum", "right-temporal", "left-parietal", "other"]
    comp, names = compartment_map(np.array(values).reshape(1, 1, -1), symmetric=True)
    assert names[comp.ravel()[2]] == "temporal" and names[comp.ravel()[6]] == "temporal"


def test_compartment_fill_nearest():
    labels = np.zeros((1, 1, 10), np.int16)
    labels[0, 0, 0] = AAL["Frontal_Sup_L"]
    labels[0, 0, 9] = AAL["Occipital_Mid_R"]
    fill = np.ones(labels.shape, bool)
    comp, names = compartment_map(labels, fill_mask=fill, voxel_sizes=(1.0, 1.0, 1.0),
                                  fill_mm=3.0)
    got = [names[c] for c in comp.ravel()]
    assert got[:4] == ["left-frontal"] * 4 and got[6:] == ["right-occipital"] * 4
    assert got[4:6] == ["other", "other"]  # farther than fill_mm


def test_small_compartment_merged_into_other():
    tissues, brain, labels, _ = phantom()
    pet = synthetic_pet(tissues, brain, labels)
    _, info = TissueModel(min_compartment_mm3=5000.0).predict(pet, tissues, brain, VOXEL,
                                                              labels)
    assert info["MergedIntoOther"] == ["deep-gm"]
    assert info["Coefficients"]["deep-gm"] is None and info["Coefficients"]["other"] > 0


def test_irls_rejects_outliers(rng):
    x = rng.uniform(0, 1, (2000, 2))
    y = x @ np.array([2.0, 3.0]) + rng.normal(0, 0.01, 2000)
    y[:100] -= 2.0  # 5 % gross outliers
    beta, w, info = irls_nnls(x, y)
    np.testing.assert_allclose(beta, [2.0, 3.0], rtol=0.01)
    assert np.all(w[:100] == 0) and info["converged"]
    beta_ols, _, _ = irls_nnls(x, y, loss="ols")
    assert np.max(np.abs(beta_ols - [2.0, 3.0])) > 0.05
    beta_nn, _, _ = irls_nnls(x, -y)  # non-negativity
    assert np.all(beta_nn >= 0)


def test_errors():
    tissues, brain, labels, _ = phantom()
    pet = np.ones(brain.shape, np.float32)
    model = TissueModel()
    with pytest.raises(ValueError, match="missing"):
        model.predict(pet, {"GM": tissues["GM"]}, brain, VOXEL)
    with pytest.raises(ValueError, match="shape"):
        model.predict(pet[:-1], tissues, brain, VOXEL)
    with pytest.raises(ValueError, match="shape"):
        model.predict(pet, tissues, brain, VOXEL, labels[:-1])
    with pytest.raises(ValueError, match="empty"):
        model.predict(pet, tissues, np.zeros_like(brain), VOXEL)
    with pytest.raises(ValueError, match="voxel_sizes"):
        model.predict(pet, tissues, brain, (2.0, 0.0, 2.0))
    with pytest.raises(ValueError, match="loss"):
        TissueModel(loss="l1")
    assert TissueModel.name == "tissue"
