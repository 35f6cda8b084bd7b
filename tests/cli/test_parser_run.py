import pytest

from pseudopet_bids.cli.parser import build_parser
from pseudopet_bids.cli.run import main
from tests.conftest import make_bids


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--version"])
    assert info.value.code == 0
    assert "pseudopet" in capsys.readouterr().out


def test_labels_strip_sub(tmp_path):
    args = build_parser().parse_args([str(tmp_path), str(tmp_path / "o"), "participant",
                                      "--participant-label", "sub-01", "02", "-vv"])
    assert args.participant_label == ["01", "02"] and args.verbosity == 2


@pytest.mark.parametrize("extra", [["--z-threshold", "-1"], ["--gm-threshold", "1.5"],
                                   ["--device", "tpu"], ["--model", "nonexistent"],
                                   ["--participant-label", "a_b"], ["--nprocs", "0"]])
def test_bad_options_exit_64(tmp_path, extra):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([str(tmp_path), str(tmp_path / "o"), "participant", *extra])
    assert info.value.code == 64


def test_missing_bids_dir_exit_64(tmp_path):
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path / "nope"), str(tmp_path / "o"), "participant"])
    assert info.value.code == 64


@pytest.mark.parametrize("where", ["same", "inside"])
def test_output_inside_input(tmp_path, where, caplog):
    root = make_bids(tmp_path / "ds", {"01": {}})
    out = root if where == "same" else root / "derivatives" / "pp"
    assert main([str(root), str(out), "participant", "--skip-bids-validation"]) == 64
    assert "outside the BIDS dataset" in caplog.text
    assert not (root / "derivatives").exists()


def test_work_dir_inside_input(tmp_path):
    root = make_bids(tmp_path / "ds", {"01": {}})
    assert main([str(root), str(tmp_path / "o"), "participant", "-w", str(root / "work"),
                 "--skip-bids-validation"]) == 64


def test_unknown_participant_exit_64_no_output(tmp_path, caplog):
    root = make_bids(tmp_path / "ds", {"01": {}})
    out = tmp_path / "out"
    assert main([str(root), str(out), "participant", "--participant-label", "99",
                 "--skip-bids-validation"]) == 64
    assert "99" in caplog.text and not out.exists()


def test_nothing_runnable_exit_66(tmp_path, caplog):
    root = make_bids(tmp_path / "ds", {"01": {"pet": "DASB"}, "02": {"t1w": False}})
    out = tmp_path / "out"
    assert main([str(root), str(out), "participant", "--skip-bids-validation"]) == 66
    assert "not FDG" in caplog.text and "no T1w" in caplog.text
    assert not out.exists()


def test_not_bids_exit(tmp_path):
    (tmp_path / "ds").mkdir()
    assert main([str(tmp_path / "ds"), str(tmp_path / "o"), "participant",
                 "--skip-bids-validation"]) == 66
    assert main([str(tmp_path / "ds"), str(tmp_path / "o"), "participant"]) == 16
    assert not (tmp_path / "o").exists()


def test_group_without_results(tmp_path):
    root = make_bids(tmp_path / "ds", {"01": {}})
    assert main([str(root), str(tmp_path / "o"), "group", "--skip-bids-validation"]) == 66
