"""Translation quality on held-out controls, from fabricated participant outputs."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest

from pseudopet_bids.bids.participants import Participant
from pseudopet_bids.evaluate import paired

SHAPE = (20, 24, 18)


def test_to_unit_is_the_documented_rule():
    pet = np.array([0.0, 5.0, 10.0, 20.0, 40.0])
    assert np.allclose(paired.to_unit(pet, 10.0), [0, 0.2, 0.4, 0.8, 1.0])
    with pytest.raises(ValueError, match="positive"):
        paired.to_unit(pet, 0.0)


def test_control_metrics_hand_computed():
    rng = np.random.default_rng(0)
    real = rng.uniform(0.2, 0.8, SHAPE)
    mask = np.zeros(SHAPE, bool)
    mask[4:16, 4:20, 3:15] = True
    same = paired.control_metrics(real, real, mask)
    assert same["ssim_brain"] == pytest.approx(1.0) and same["rmse_brain"] == 0
    assert same["slice_ssim_brain"] == pytest.approx(1.0)
    off = paired.control_metrics(real, real + 0.1, mask)
    assert off["rmse_brain"] == pytest.approx(0.1) and off["mae_image"] == pytest.approx(0.1)
    assert off["psnr_brain"] == pytest.approx(20.0)


def test_brain_slices_shape_and_background():
    vol = np.ones(SHAPE)
    mask = np.zeros(SHAPE, bool)
    mask[5:15, 6:18, 4:12] = True
    slices = paired.brain_slices(vol, mask, size=32)
    assert slices.shape == (8, 32, 32)
    assert slices.max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="empty"):
        paired.brain_slices(vol, np.zeros(SHAPE, bool))


def _subject(out, label, real, pseudo, mask, model="cyclegan", scale=10.0):
    anat, pet = out / f"sub-{label}" / "anat", out / f"sub-{label}" / "pet"
    anat.mkdir(parents=True)
    pet.mkdir(parents=True)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), aff),
             anat / f"sub-{label}_desc-brain_mask.nii.gz")
    base = f"sub-{label}_trc-FDG_space-T1w"
    nib.save(nib.Nifti1Image(real.astype(np.float32), aff), pet / f"{base}_desc-preproc_pet.nii.gz")
    (pet / f"{base}_desc-preproc_pet.json").write_text(
        json.dumps({"IntensityNormalization": {"Scale": scale}}))
    nib.save(nib.Nifti1Image(pseudo.astype(np.float32), aff),
             pet / f"{base}_desc-{model}Pseudonormal_pet.nii.gz")


@pytest.fixture
def outputs(tmp_path):
    rng = np.random.default_rng(1)
    mask = np.zeros(SHAPE, bool)
    mask[3:17, 3:21, 3:15] = True
    real = rng.uniform(5, 15, SHAPE) * mask
    out = tmp_path / "out"
    _subject(out, "C1", real, real * 0.9, mask)         # held out
    _subject(out, "C2", real, real * 1.1, mask)         # held out
    _subject(out, "C3", real, real, mask)               # trained on: excluded
    _subject(out, "P1", real, real, mask)               # patient: excluded
    (out / "models" / "cyclegan").mkdir(parents=True)
    (out / "models" / "cyclegan" / "model.json").write_text(json.dumps(
        {"training_subjects": {"mri": ["sub-C3"], "pet": ["sub-C3"], "validation": []}}))
    parts = {k: Participant(k, "control") for k in ("C1", "C2", "C3")}
    parts["P1"] = Participant("P1", "patient", ("left-temporal",))
    return out, parts


def test_only_held_out_controls_are_evaluated(outputs):
    out, parts = outputs
    per, summary, spectra = paired.evaluate_translation(out, parts)
    assert sorted(per["participant_id"]) == ["sub-C1", "sub-C2"]
    row = summary.set_index("model").loc["cyclegan"]
    assert row["n_controls"] == 2 and math.isnan(row["fid"])
    # 10 % too low and 10 % too high: the same error size
    assert per["mae_brain"].iloc[0] == pytest.approx(per["mae_brain"].iloc[1], rel=1e-6)
    assert row["spectrum_distance"] >= 0
    assert set(spectra["source"]) == {"real", "synthetic"}
    assert spectra.groupby("source")["value"].sum().round(6).tolist() == [1.0, 1.0]


def test_fid_is_computed_on_the_slices_when_a_network_is_given(outputs, monkeypatch):
    out, parts = outputs
    seen = {}

    def fake_fid(real, fake, model, device="cpu"):
        seen["shapes"] = (real.shape, fake.shape, model, device)
        return 12.5

    monkeypatch.setattr(paired, "fid", fake_fid)  # the name paired.py imported
    _, summary, _ = paired.evaluate_translation(out, parts, fid_model="net")
    assert summary["fid"].iloc[0] == 12.5
    real_shape, fake_shape, model, _ = seen["shapes"]
    assert real_shape == fake_shape and real_shape[1:] == (paired.SLICE_SIZE,) * 2
    assert model == "net"


def test_no_controls_gives_empty_tables(tmp_path):
    per, summary, spectra = paired.evaluate_translation(tmp_path, {})
    assert per.empty and summary.empty and spectra.empty
    assert "ssim_brain" in per.columns
