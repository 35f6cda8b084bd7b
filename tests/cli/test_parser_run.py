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


@pytest.mark.parametrize("weights", ["missing.pth", "garbage.pth", "weights.txt"])
def test_bad_fid_weights_exit_66_before_writing(tmp_path, caplog, weights):
    root = make_bids(tmp_path / "ds", {"01": {}})
    out = tmp_path / "o"
    out.mkdir()
    (tmp_path / "garbage.pth").write_bytes(b"not a torch file")
    (tmp_path / "weights.txt").write_text("x")
    assert main([str(root), str(out), "group", "--skip-bids-validation", "--fid-weights",
                 str(tmp_path / weights)]) == 66
    assert weights in caplog.text  # the message names the file
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("args", [["participant", "--build-normative"],
                                  ["group", "--build-normative", "--train", "--model",
                                   "cyclegan"],
                                  ["group", "--z-reference", "controls"]])
def test_evaluation_options_at_the_wrong_level_exit_64(tmp_path, args):
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path), str(tmp_path / "o"), *args])
    assert info.value.code == 64


def test_build_normative_without_control_outputs_exit_66(tmp_path, caplog):
    root = make_bids(tmp_path / "ds", {"01": {}})
    out = tmp_path / "o"
    out.mkdir()
    assert main([str(root), str(out), "group", "--build-normative", "--model", "tissue",
                 "--skip-bids-validation"]) == 66
    assert "at least 3 healthy controls" in caplog.text
    assert not (out / "models").exists()


def _truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


@pytest.mark.parametrize("breakage,message", [
    ("truncated_t1", "truncated or corrupt"),
    ("nan_pet", "non-finite"),
    ("frames", "frames but FrameDuration lists"),
])
def test_bad_images_fail_the_subject_cleanly(tmp_path, caplog, breakage, message):
    import json

    import numpy as np

    from tests.conftest import blob, write_image

    root = make_bids(tmp_path / "ds", {"01": {"frames": 2}})
    t1 = root / "sub-01/anat/sub-01_T1w.nii.gz"
    pet = root / "sub-01/pet/sub-01_trc-FDG_pet.nii.gz"
    if breakage == "truncated_t1":
        write_image(t1, blob((60, 60, 60)) + 1)
        _truncate(t1)
        bad = t1
    elif breakage == "nan_pet":
        data = np.stack([blob(), blob()], -1)
        data[3, 3, 3, 0] = np.nan
        write_image(pet, data)
        bad = pet
    else:
        sidecar = pet.with_name("sub-01_trc-FDG_pet.json")
        meta = json.loads(sidecar.read_text())
        meta["FrameDuration"] = [300.0, 300.0, 300.0]
        sidecar.write_text(json.dumps(meta))
        bad = pet
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    assert main([str(root), str(out), "participant", "--skip-bids-validation"]) == 1
    assert message in caplog.text and str(bad) in caplog.text
    assert not (out / "sub-01").exists()
    assert not list(out.glob(".staging*"))
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    status = json.loads((out / "logs" / "sub-01_status.json").read_text())
    assert status["state"] == "failed" and status["stage"] == "image intake"
    assert message in status["last_error"]["message"]


def test_temporary_files_go_to_the_work_dir_and_main_restores(tmp_path, monkeypatch):
    import os
    import tempfile

    from pseudopet_bids.cli.environment import use_work_tmp

    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.delenv("TMPDIR", raising=False)
    tmp = use_work_tmp(tmp_path / "work")
    assert tempfile.gettempdir() == str(tmp) and os.environ["TMPDIR"] == str(tmp)
    tempfile.tempdir = None
    del os.environ["TMPDIR"]
    root = make_bids(tmp_path / "ds", {"01": {}})
    (tmp_path / "out").mkdir()
    seen = {}
    real = use_work_tmp

    def spy(work):
        seen["tmp"] = real(work)
        return seen["tmp"]

    monkeypatch.setattr("pseudopet_bids.cli.environment.use_work_tmp", spy)
    main([str(root), str(tmp_path / "out"), "group", "--skip-bids-validation",
          "-w", str(tmp_path / "w2")])
    assert seen["tmp"] == tmp_path / "w2" / "tmp"  # it was used during the run ...
    assert tempfile.tempdir is None and "TMPDIR" not in os.environ  # ... and undone after
