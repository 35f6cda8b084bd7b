import json

import pytest

from pseudopet_bids.bids.discovery import (NoSelectionError, choose_t1w, discover, is_fdg,
                                           load_filters, preflight_table, read_sidecar)
from pseudopet_bids.errors import UsageError
from tests.conftest import make_bids


@pytest.mark.parametrize("name", ["FDG", "fdg", "[18F]FDG", "18F-FDG", "Fluorodeoxyglucose"])
def test_fdg_spellings(name):
    assert is_fdg(name)


@pytest.mark.parametrize("name", ["CIMBI36", "DASB", "", None, "PiB"])
def test_not_fdg(name):
    assert not is_fdg(name)


def test_discover_runnable_and_skipped(tmp_path):
    root = make_bids(tmp_path / "ds", {
        "01": {}, "02": {"pet": None}, "03": {"t1w": False}, "04": {"pet": "DASB"},
    })
    units = {u.subject: u for u in discover(root)}
    assert units["01"].runnable and units["01"].tracer == "FDG" and units["01"].n_frames == 1
    assert units["02"].skip_reason == "no PET image"
    assert units["03"].skip_reason == "no T1w image"
    assert "not FDG (DASB)" in units["04"].skip_reason
    table = preflight_table(list(units.values()))
    assert "will run" in table and "skipped: no PET image" in table
    assert discover(root, allow_any_tracer=True)[3].runnable


def test_sessions_and_t1_from_other_session(tmp_path):
    root = make_bids(tmp_path / "ds", {"01": {"sessions": ["a", "b"]}})
    (root / "sub-01/ses-b/anat/sub-01_ses-b_T1w.nii.gz").unlink()
    units = discover(root)
    assert [u.session for u in units] == ["a", "b"]
    assert units[1].runnable and units[1].t1w.name == "sub-01_ses-a_T1w.nii.gz"
    assert "another session" in units[1].notes[0]
    assert [u.session for u in discover(root, session_labels=["b"])] == ["b"]


def test_several_t1w_rule(tmp_path):
    from pathlib import Path
    picks = choose_t1w([Path("sub-1_run-1_T1w.nii.gz"), Path("sub-1_run-2_T1w.nii.gz"),
                        Path("sub-1_ce-gad_run-3_T1w.nii.gz")])
    assert picks.name == "sub-1_run-2_T1w.nii.gz"


def test_unknown_label_and_empty_selection(tmp_path):
    root = make_bids(tmp_path / "ds", {"01": {}})
    with pytest.raises(UsageError, match="not in the dataset: 99"):
        discover(root, ["99"])
    with pytest.raises(NoSelectionError):
        discover(root, session_labels=["x"])


def test_unreadable_pet_skipped_in_preflight(tmp_path):
    root = make_bids(tmp_path / "ds", {"01": {}})
    (root / "sub-01/pet/sub-01_trc-FDG_pet.nii.gz").write_bytes(b"")
    unit = discover(root)[0]
    assert not unit.runnable and "empty" in unit.skip_reason


def test_4d_frames_and_inheritance(tmp_path):
    root = make_bids(tmp_path / "ds", {"01": {"frames": 3}})
    (root / "trc-FDG_pet.json").write_text(json.dumps({"Units": "kBq/mL", "BodyPart": "Brain"}))
    unit = discover(root)[0]
    assert unit.n_frames == 3
    meta = read_sidecar(unit.pet)
    assert meta["BodyPart"] == "Brain" and meta["Units"] == "Bq/mL"  # closest sidecar wins


def test_invalid_sidecar_json_is_a_skip_reason(tmp_path):
    root = make_bids(tmp_path / "ds", {"01": {}})
    (root / "sub-01/pet/sub-01_trc-FDG_pet.json").write_text("{not json")
    unit = discover(root)[0]
    assert not unit.runnable and "invalid JSON sidecar" in unit.skip_reason


def test_filter_file(tmp_path):
    bad = tmp_path / "f.json"
    bad.write_text('{"bold": {}}')
    with pytest.raises(UsageError):
        load_filters(bad)
    good = tmp_path / "g.json"
    good.write_text('{"pet": {"tracer": "FDG"}}')
    assert load_filters(good) == {"pet": {"tracer": "FDG"}}


def test_database_dir_is_created_and_reused(tmp_path):
    root = make_bids(tmp_path / "ds", {"01": {}})
    db = tmp_path / "db"
    first = discover(root, database_dir=db)
    assert any(db.iterdir())
    second = discover(root, database_dir=db)
    assert [u.pet for u in first] == [u.pet for u in second]
