"""--derivatives: which fMRIPrep/sMRIPrep/PETPrep files are reused (discovery only, tiny images)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pseudopet_bids.bids.discovery import discover, preflight_table
from pseudopet_bids.bids.reuse import parse_derivative_specs
from pseudopet_bids.errors import InputError
from tests.conftest import blob, make_bids, write_image

XFM = "from-{}_to-{}_mode-image_xfm.h5"


def make_derivatives(root: Path, subject: str = "01", session: str | None = None,
                     tissues=("GM", "WM", "CSF"), template: str = "MNI152NLin2009aSym",
                     pet_entities: str | None = "trc-FDG", name: str = "fMRIPrep",
                     shape=(20, 22, 18)) -> Path:
    """An fMRIPrep-style derivative dataset named exactly as fMRIPrep/PETPrep name files."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({
        "Name": name, "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": name, "Version": "24.1.0"}]}))
    prefix = f"sub-{subject}" + (f"_ses-{session}" if session else "")
    anat = root / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
    write_image(anat / f"{prefix}_desc-preproc_T1w.nii.gz", blob())
    write_image(anat / f"{prefix}_space-MNI152NLin2009cAsym_desc-preproc_T1w.nii.gz",
                blob((30, 30, 30)))
    write_image(anat / f"{prefix}_desc-brain_mask.nii.gz", blob() > 10)
    write_image(anat / f"{prefix}_dseg.nii.gz", blob() > 20)
    for t in tissues:
        write_image(anat / f"{prefix}_label-{t}_probseg.nii.gz", np.zeros(shape) + 0.3)
    if template:
        for a, b in (("T1w", template), (template, "T1w")):
            (anat / f"{prefix}_{XFM.format(a, b)}").write_bytes(b"HDF5 stand-in")
    if pet_entities:
        pet = root / f"sub-{subject}" / (f"ses-{session}" if session else "") / "pet"
        write_image(pet / f"{prefix}_{pet_entities}_space-T1w_desc-preproc_pet.nii.gz", blob())
    return root


@pytest.fixture
def raw(tmp_path):
    return make_bids(tmp_path / "raw", {"01": {}, "02": {}})


def units_with(raw, **derivatives):
    return {u.subject: u for u in discover(raw, derivatives=derivatives)}


def test_fmriprep_layout_is_reused_role_by_role(raw, tmp_path):
    deriv = make_derivatives(tmp_path / "fmriprep")
    unit = units_with(raw, fmriprep=deriv)["01"]
    assert unit.runnable
    files = unit.reused.files
    assert files["t1w"].name == "sub-01_desc-preproc_T1w.nii.gz"  # not the space-MNI one
    assert files["mask"].name == "sub-01_desc-brain_mask.nii.gz"
    assert {files[t].name for t in ("GM", "WM", "CSF")} == {
        f"sub-01_label-{t}_probseg.nii.gz" for t in ("GM", "WM", "CSF")}
    assert files["xfm_forward"].name == "sub-01_" + XFM.format("T1w", "MNI152NLin2009aSym")
    assert files["xfm_inverse"].name == "sub-01_" + XFM.format("MNI152NLin2009aSym", "T1w")
    assert files["pet"].name == "sub-01_trc-FDG_space-T1w_desc-preproc_pet.nii.gz"
    assert unit.reused.uris["mask"] == "bids:fmriprep:sub-01/anat/sub-01_desc-brain_mask.nii.gz"
    assert units_with(raw, fmriprep=deriv)["02"].reused.files == {}  # nothing for sub-02
    table = preflight_table(list(units_with(raw, fmriprep=deriv).values()))
    assert "reused derivatives" in table and "fmriprep: T1w, mask, tissues, xfm, PET" in table


def test_other_template_is_not_reused_and_says_how(raw, tmp_path):
    deriv = make_derivatives(tmp_path / "fmriprep", template="MNI152NLin2009cAsym")
    unit = units_with(raw, fmriprep=deriv)["01"]
    assert unit.runnable and not unit.reused.xfm
    assert any("MNI152NLin2009cAsym" in n and "--output-spaces" in n for n in unit.notes)


def test_incomplete_tissues_are_computed(raw, tmp_path):
    deriv = make_derivatives(tmp_path / "fmriprep", tissues=("GM", "WM"))
    unit = units_with(raw, fmriprep=deriv)["01"]
    assert unit.runnable and not unit.reused.tissues and "mask" in unit.reused.files
    assert any("only GM/WM probseg" in n for n in unit.notes)


def test_grid_mismatch_skips_the_subject_naming_the_file(raw, tmp_path):
    deriv = make_derivatives(tmp_path / "fmriprep", shape=(21, 22, 18))
    unit = units_with(raw, fmriprep=deriv)["01"]
    assert not unit.runnable
    assert "label-GM_probseg" in unit.skip_reason and "desc-preproc_T1w" in unit.skip_reason


def test_session_files_win_over_subject_level_ones(tmp_path):
    raw = make_bids(tmp_path / "raw", {"01": {"sessions": ["a", "b"]}})
    deriv = make_derivatives(tmp_path / "fmriprep", pet_entities=None)  # subject-level anat
    make_derivatives(deriv, session="b", pet_entities="trc-FDG")
    units = {u.session: u for u in discover(raw, derivatives={"fmriprep": deriv})}
    assert units["a"].reused.files["t1w"].name == "sub-01_desc-preproc_T1w.nii.gz"
    assert units["b"].reused.files["t1w"].name == "sub-01_ses-b_desc-preproc_T1w.nii.gz"
    assert "pet" not in units["a"].reused.files
    assert units["b"].reused.files["pet"].name.startswith("sub-01_ses-b_trc-FDG")


def test_pet_entities_must_match_the_chosen_raw_pet(raw, tmp_path):
    deriv = make_derivatives(tmp_path / "petprep", pet_entities="trc-FDG_rec-OSEM")
    assert units_with(raw, petprep=deriv)["01"].reused.files.get("pet") is not None
    deriv2 = make_derivatives(tmp_path / "petprep2", pet_entities="trc-PiB")
    assert "pet" not in units_with(raw, petprep=deriv2)["01"].reused.files


def test_ambiguous_candidates_are_not_reused(raw, tmp_path):
    deriv = make_derivatives(tmp_path / "fmriprep")
    anat = deriv / "sub-01" / "anat"
    write_image(anat / "sub-01_run-2_desc-preproc_T1w.nii.gz", blob())
    unit = units_with(raw, fmriprep=deriv)["01"]
    assert "t1w" not in unit.reused.files
    assert any("t1w not reused: 2 candidates" in n for n in unit.notes)


def test_anatomy_from_the_first_dataset_pet_from_any(raw, tmp_path):
    smriprep = make_derivatives(tmp_path / "smriprep", pet_entities=None)
    petprep = tmp_path / "petprep"
    petprep.mkdir()
    (petprep / "dataset_description.json").write_text(json.dumps(
        {"Name": "PETPrep", "BIDSVersion": "1.9.0", "DatasetType": "derivative"}))
    write_image(petprep / "sub-01/pet/sub-01_trc-FDG_space-T1w_desc-preproc_pet.nii.gz", blob())
    unit = units_with(raw, smriprep=smriprep, petprep=petprep)["01"]
    assert unit.reused.uris["t1w"].startswith("bids:smriprep:")
    assert unit.reused.uris["pet"].startswith("bids:petprep:")


def test_t1w_only_in_derivatives_makes_the_subject_runnable(tmp_path):
    raw = make_bids(tmp_path / "raw", {"01": {"t1w": False}})
    assert discover(raw)[0].skip_reason == "no T1w image"
    deriv = make_derivatives(tmp_path / "fmriprep")
    assert discover(raw, derivatives={"fmriprep": deriv})[0].runnable


def test_fingerprint_changes_with_content(raw, tmp_path):
    deriv = make_derivatives(tmp_path / "fmriprep")
    before = units_with(raw, fmriprep=deriv)["01"].reused.fingerprint()
    write_image(deriv / "sub-01/anat/sub-01_desc-brain_mask.nii.gz", blob() > 30)
    assert units_with(raw, fmriprep=deriv)["01"].reused.fingerprint() != before


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "folder not found"),
    (lambda p: p.mkdir(), "dataset_description.json is missing"),
    (lambda p: (p.mkdir(), (p / "dataset_description.json").write_text("{")),
     "unreadable dataset_description.json"),
])
def test_bad_derivative_datasets_are_refused(tmp_path, setup, message):
    path = tmp_path / "fmriprep"
    setup(path)
    with pytest.raises(InputError, match=message) as info:
        parse_derivative_specs([f"fmriprep={path}"])
    assert str(path) in str(info.value)


def test_specs_name_defaults_to_folder_and_duplicates_are_refused(tmp_path):
    deriv = make_derivatives(tmp_path / "smriprep")
    assert parse_derivative_specs([str(deriv)]) == {"smriprep": deriv.resolve()}
    with pytest.raises(InputError, match="given twice"):
        parse_derivative_specs([f"a={deriv}", f"a={deriv}"])
