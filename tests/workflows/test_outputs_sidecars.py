"""Sidecar contents decided in workflows/outputs.py: the model record and SkullStripped."""

from __future__ import annotations

import numpy as np

from pseudopet_bids.workflows.outputs import model_sidecars, zero_outside


def test_model_card_referenced_not_copied(tmp_path):
    card = tmp_path / "out" / "models" / "cyclegan" / "model.json"
    info = {"Name": "cyclegan", "Type": "cyclegan", "Preset": "small", "NSamples": 1,
            "ContextSlices": 0, "GMMedianRescale": 1.01, "ModelCard": str(card),
            "ModelCardSHA256": "c" * 64,
            "Calibration": {"Method": "compartments", "Gains": {"gm:frontal": 1.02}}}
    full, ref = model_sidecars("cyclegan", "w" * 64, info, 1, tmp_path / "out",
                               "bids::sub-01/pet/sub-01_desc-cycleganPseudonormal_pet.nii.gz")
    assert full["ModelParameters"]["ModelCard"] == "bids::models/cyclegan/model.json"
    assert full["ModelParameters"]["Calibration"]["Gains"] == {"gm:frontal": 1.02}
    assert info["ModelCard"] == str(card)  # the caller's record is left as it was
    assert ref == {"Model": "cyclegan", "ModelSHA256": "w" * 64, "NSamples": 1,
                   "ModelName": "cyclegan", "ModelPreset": "small",
                   "ModelCard": "bids::models/cyclegan/model.json",
                   "ModelCardSHA256": "c" * 64, "Calibration": "compartments",
                   "ModelFit": "bids::sub-01/pet/sub-01_desc-cycleganPseudonormal_pet.json"}
    # a model folder outside the output folder keeps its absolute path
    full, ref = model_sidecars("cyclegan", "w" * 64, info, 1, tmp_path / "elsewhere", "bids::x")
    assert ref["ModelCard"] == str(card.resolve())


def test_tissue_fit_stays_in_one_sidecar():
    fit = {"Coefficients": {f"region{i}": 1.0 for i in range(60)}}
    full, ref = model_sidecars("tissue", "s" * 64, fit, 1, "/out", "bids::p.nii.gz")
    assert full["ModelParameters"] == fit
    assert "ModelParameters" not in ref and ref["ModelFit"] == "bids::p.json"
    assert len(str(ref)) < 300


def test_zero_outside():
    outside = np.ones((4, 4, 4), bool)
    outside[1:3, 1:3, 1:3] = False
    data = np.zeros((4, 4, 4), np.float32)
    data[1:3, 1:3, 1:3] = 5
    assert zero_outside(data, outside)
    data[0, 0, 0] = 1e-6
    assert not zero_outside(data, outside)
