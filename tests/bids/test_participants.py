import pytest

from pseudopet_bids.bids.participants import parse_focus, parse_group, read_participants
from pseudopet_bids.errors import InputError


@pytest.mark.parametrize("text,group", [("control", "control"), ("HC", "control"),
                                        ("Healthy", "control"), ("PATIENT", "patient"),
                                        ("n/a", "unknown")])
def test_groups(text, group):
    assert parse_group(text) == group


def test_foci():
    assert parse_focus("left-temporal; Right-Frontal") == ("left-temporal", "right-frontal")
    assert parse_focus("n/a") == ()
    with pytest.raises(InputError, match="insula"):
        parse_focus("left-insula")


def test_read(tmp_path):
    (tmp_path / "participants.tsv").write_text(
        "participant_id\tgroup\tfocus\nsub-01\tcontrol\tn/a\nsub-02\tpatient\tleft-temporal\n")
    parts = read_participants(tmp_path)
    assert parts["01"].group == "control" and parts["02"].foci == ("left-temporal",)
    assert read_participants(tmp_path / "missing") == {}
