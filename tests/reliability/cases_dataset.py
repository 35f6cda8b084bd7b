"""Dataset-level cases: description, labels, folders, permissions, paths, symlinks."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

from tests.reliability.corpus import PET, T1, case, dataset, probed, real
from tests.reliability.harness import Scenario

DESCRIPTION = "dataset_description.json"


def _argv(root: Path, out: Path, *extra: str, work: Path | None = None) -> list[str]:
    return [str(root), str(out), "participant", "--skip-bids-validation", "--omp-nthreads", "1",
            "--model", "tissue", *(["-w", str(work)] if work else []), *extra]


@case("dataset", "no dataset_description.json (--skip-bids-validation)", 66,
      "refused before any output", "dataset_description.json is missing")
def no_description(tmp: Path) -> Scenario:
    root = dataset(tmp)
    (root / DESCRIPTION).unlink()
    return Scenario(root, file=DESCRIPTION, fix="add dataset_description.json")


@case("dataset", "no dataset_description.json, validator on", 16,
      "refused before any output (BIDS validation)", "dataset_description.json is missing")
def no_description_validated(tmp: Path) -> Scenario:
    root = dataset(tmp)
    (root / DESCRIPTION).unlink()
    return Scenario(root, validate=True, file=DESCRIPTION, fix="add dataset_description.json")


@case("dataset", "dataset_description.json is not valid JSON", 66,
      "refused before any output; the JSON error is quoted", "is not valid JSON")
def description_invalid_json(tmp: Path) -> Scenario:
    root = dataset(tmp)
    (root / DESCRIPTION).write_text('{"Name": "x", "BIDSVersion": }')
    return Scenario(root, file=DESCRIPTION, fix="a UTF-8 JSON object")


@case("dataset", "dataset_description.json is not valid JSON, validator on", 16,
      "refused before the validator runs", "is not valid JSON")
def description_invalid_json_validated(tmp: Path) -> Scenario:
    root = dataset(tmp)
    (root / DESCRIPTION).write_text("{")
    return Scenario(root, validate=True, file=DESCRIPTION, fix="a UTF-8 JSON object")


@case("dataset", "dataset_description.json holds a JSON list", 66,
      "refused before any output", "is not a JSON object")
def description_not_an_object(tmp: Path) -> Scenario:
    root = dataset(tmp)
    (root / DESCRIPTION).write_text('["Name", "BIDSVersion"]')
    return Scenario(root, file=DESCRIPTION, fix='{"Name"')


@case("dataset", "a derivatives dataset (DatasetType derivative) given as the input", 64,
      "usage error: its preprocessed files would be taken for raw images",
      "the input is a derivatives dataset")
def description_derivative(tmp: Path) -> Scenario:
    root = dataset(tmp)
    (root / DESCRIPTION).write_text(json.dumps({"Name": "fmriprep", "BIDSVersion": "1.10.0",
                                                "DatasetType": "derivative"}))
    return Scenario(root, file=root.name, fix="-d NAME=PATH")


@case("dataset", "empty dataset (dataset_description.json only)", 66,
      "refused: no participants", "the dataset holds no participants")
def empty_dataset(tmp: Path) -> Scenario:
    root = dataset(tmp, {})
    return Scenario(root, file=root.name, fix="contains the sub-<label> folders")


@case("dataset", "empty dataset, validator on (it passes)", 66,
      "validation passes, then refused: no participants", "the dataset holds no participants")
def empty_dataset_validated(tmp: Path) -> Scenario:
    root = dataset(tmp, {})
    return Scenario(root, validate=True, file=root.name, fix="contains the sub-<label> folders")


@case("dataset", "--participant-label sub-01 (with the prefix)", 0,
      "the prefix is stripped; only sub-01 runs")
def label_with_sub_prefix(tmp: Path) -> Scenario:
    root = dataset(tmp, {"01": {}, "02": {}})

    def verify(run) -> None:
        assert set(run.probed) == {"sub-01"}

    return Scenario(root, ["--participant-label", "sub-01"], ran={"sub-01"}, verify=verify)


@case("dataset", "--participant-label 01 sub-01 (the same label twice)", 0,
      "deduplicated as fMRIPrep does, logged; sub-01 runs once", "given more than once")
def label_duplicated(tmp: Path) -> Scenario:
    root = dataset(tmp, {"01": {}, "02": {}})

    def verify(run) -> None:
        assert set(run.probed) == {"sub-01"}

    return Scenario(root, ["--participant-label", "01", "sub-01"], ran={"sub-01"},
                    verify=verify)


@case("dataset", "--participant-label 99 (not in the dataset)", 64,
      "usage error naming the label and the labels found", "not in the dataset: 99")
def label_unknown(tmp: Path) -> Scenario:
    root = dataset(tmp)
    return Scenario(root, ["--participant-label", "99"], file=root.name,
                    fix="check --participant-label")


@case("dataset", "--participant-label 01_a (not alphanumeric)", 64,
      "usage error from the parser", "must be alphanumeric")
def label_invalid_characters(tmp: Path) -> Scenario:
    return Scenario(dataset(tmp), ["--participant-label", "01_a"])


@case("dataset", "--session-label that no participant has", 18,
      "the selection matched nothing; the sessions found are listed",
      "selection matched nothing (sessions of the selected participants: a, b)")
def session_unknown(tmp: Path) -> Scenario:
    root = dataset(tmp, {"01": {"sessions": ["a", "b"]}})
    return Scenario(root, ["--session-label", "c"], file=root.name, fix="--session-label")


@case("dataset", "participants.tsv labels without 'sub-'", 0,
      "accepted: the group and focus reach the participant")
def participants_without_prefix(tmp: Path) -> Scenario:
    root = dataset(tmp, participants="participant_id\tgroup\tfocus\n01\tpatient\tleft-temporal\n")

    def verify(run) -> None:
        info = probed(run)["participant"]
        assert info.group == "patient" and info.foci == ("left-temporal",)

    return Scenario(root, ran={"sub-01"}, verify=verify)


@case("dataset", "participants.tsv with one row per session (real: OpenNeuro ds004513 style)",
      0, "accepted; the repetition is logged", "several rows for sub-01")
def participants_rows_per_session(tmp: Path) -> Scenario:
    root = dataset(tmp, participants="participant_id\tsession_id\tgroup\n"
                                     "sub-01\tses-a\tcontrol\nsub-01\tses-b\tcontrol\n")
    return Scenario(root, ran={"sub-01"})


@case("dataset", "participants.tsv rows that disagree on the group", 66,
      "refused: the participant would be in two groups", "several rows that disagree")
def participants_rows_disagree(tmp: Path) -> Scenario:
    root = dataset(tmp, participants="participant_id\tgroup\nsub-01\tcontrol\nsub-01\tpatient\n")
    return Scenario(root, file="participants.tsv", fix="keep one group and focus")


@case("dataset", "participants.tsv focus that is not a lobe", 66,
      "refused: it would corrupt the group statistics", "is not one of")
def participants_bad_focus(tmp: Path) -> Scenario:
    root = dataset(tmp, participants="participant_id\tgroup\tfocus\nsub-01\tpatient\tinsula\n")
    return Scenario(root, file="participants.tsv", fix="<left|right>-<frontal")


@case("dataset", "OUTPUT_DIR = BIDS_DIR", 64, "usage error before anything is written",
      "the output folder is the input dataset or inside it")
def output_is_input(tmp: Path) -> Scenario:
    root = dataset(tmp)
    return Scenario(root, argv=_argv(root, root), file=root.name, fix="outside the BIDS dataset",
                    out=root)


@case("dataset", "OUTPUT_DIR inside BIDS_DIR (derivatives/pseudopet)", 64,
      "usage error before anything is written",
      "the output folder is the input dataset or inside it")
def output_inside_input(tmp: Path) -> Scenario:
    root = dataset(tmp)
    out = root / "derivatives" / "pseudopet"
    return Scenario(root, argv=_argv(root, out), file="derivatives/pseudopet",
                    fix="outside the BIDS dataset", out=out)


@case("dataset", "work folder inside BIDS_DIR", 64, "usage error before anything is written",
      "the work folder is inside the input dataset")
def work_inside_input(tmp: Path) -> Scenario:
    root = dataset(tmp)
    work = root / "work"
    return Scenario(root, argv=_argv(root, tmp / "out", work=work), file="work",
                    fix="outside the BIDS dataset (-w)", work=work)


@case("dataset", "--bids-database-dir inside BIDS_DIR", 64,
      "usage error: the input is never written (was: the database was built inside it)",
      "the pybids database folder is inside the input dataset")
def database_inside_input(tmp: Path) -> Scenario:
    root = dataset(tmp)
    return Scenario(root, ["--bids-database-dir", str(root / ".pybids")], file=".pybids",
                    fix="outside the BIDS dataset")


@case("dataset", "OUTPUT_DIR below a regular file", 73, "cannot create output; nothing created",
      "cannot create the folder")
def output_under_a_file(tmp: Path) -> Scenario:
    root = dataset(tmp)
    (tmp / "afile").write_text("x")
    out = tmp / "afile" / "out"
    return Scenario(root, argv=_argv(root, out, work=tmp / "work"), file="afile/out",
                    fix="choose a writable location", out=out)


@case("dataset", "work folder below a regular file", 73,
      "cannot create output; the output folder made just before is removed again (was: left "
      "behind empty)", "cannot create the folder")
def work_under_a_file(tmp: Path) -> Scenario:
    root = dataset(tmp)
    (tmp / "afile").write_text("x")
    work = tmp / "afile" / "work"
    return Scenario(root, argv=_argv(root, tmp / "out", work=work), file="afile/work",
                    fix="choose a writable location", work=work)


def _read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if not path.is_symlink():
            path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@case("dataset", "read-only input tree (chmod a-w; as root too: write attempts are audited)", 0,
      "runs; nothing under the input is opened for writing, created, renamed or removed")
def read_only_input(tmp: Path) -> Scenario:
    root = dataset(tmp)
    _read_only(root)
    return Scenario(root, ran={"sub-01"})


@case("dataset", "spaces and unicode in the input, output and work paths", 0,
      "runs; paths are passed through unchanged")
def unicode_and_spaces_in_paths(tmp: Path) -> Scenario:
    base = tmp / "dätä sét €"
    base.mkdir()
    root = dataset(base, name="my bids ünï")
    return Scenario(root, ran={"sub-01"}, out=base / "out put ø", work=base / "wörk dir")


def _annex(root: Path, rel: str, content: bytes | None) -> None:
    """Replace a file by a DataLad/git-annex style relative symlink into .git/annex/objects;
    ``content`` None leaves the object missing (not fetched)."""
    link = root / rel
    key = f"MD5E-s{len(content or b'')}--{hashlib.md5(rel.encode()).hexdigest()}.nii.gz"
    obj = root / ".git" / "annex" / "objects" / key[:2] / key / key
    if content is not None:
        obj.parent.mkdir(parents=True, exist_ok=True)
        obj.write_bytes(content)
    if link.exists() or link.is_symlink():
        link.unlink()
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(obj, link.parent), link)


@case("dataset", "T1w and PET are symlinks into .git/annex/objects (DataLad, content present)",
      0, "runs; links are read through and never replaced")
def symlinked_files(tmp: Path) -> Scenario:
    root = dataset(tmp)
    for rel in (T1, PET):
        _annex(root, rel, (root / rel).read_bytes())

    def verify(run) -> None:
        unit = probed(run)["unit"]
        assert unit.t1w.is_symlink() and unit.pet.is_symlink()

    return Scenario(root, ran={"sub-01"}, verify=verify)


@case("dataset", "broken symlink: one participant's PET not fetched (git-annex)", 0,
      "that participant is skipped, the others run", "is a broken symbolic link")
def broken_symlink(tmp: Path) -> Scenario:
    root = dataset(tmp, {"01": {}, "02": {}})
    _annex(root, "sub-02/pet/sub-02_trc-FDG_pet.nii.gz", None)
    return Scenario(root, ran={"sub-01"}, file="sub-02/pet/sub-02_trc-FDG_pet.nii.gz",
                    fix="datalad get")


@case("dataset", "real: OpenNeuro ds004513 cloned with DataLad, images never fetched", 66,
      "every participant skipped with the file and 'datalad get'; nothing written",
      "is a broken symbolic link")
def ds004513_not_fetched(tmp: Path) -> Scenario:
    root = real("ds004513", tmp)
    for rel in (root / "ANNEXED_IMAGE_FILES_NOT_AVAILABLE.txt").read_text().split():
        _annex(root, rel, None)
    return Scenario(root, file="sub-s003/ses-closed/anat/sub-s003_ses-closed_T1w.nii.gz",
                    fix="datalad get")


@case("dataset", "BIDS_DIR given as a symlink to the dataset", 0, "runs (the link is resolved)")
def input_is_a_symlink(tmp: Path) -> Scenario:
    root = dataset(tmp)
    link = tmp / "link-to-ds"
    link.symlink_to(root, target_is_directory=True)
    return Scenario(root, argv=_argv(link, tmp / "out", work=tmp / "work"), ran={"sub-01"})


def _ds004513_with_images(tmp: Path) -> Path:
    """The real ds004513 layout with tiny images whose frame counts match the sidecars."""
    import numpy as np

    from tests.conftest import blob, write_image

    root = real("ds004513", tmp)
    (root / "ANNEXED_IMAGE_FILES_NOT_AVAILABLE.txt").unlink()
    for js in sorted(root.glob("sub-*/ses-*/*/*.json")):
        image = js.with_name(js.name[:-len(".json")] + ".nii.gz")
        frames = len(json.loads(js.read_text()).get("FrameDuration", [])) or 1
        write_image(image, np.stack([blob()] * frames, -1) if frames > 1 else blob())
    return root


@case("dataset", "real ds004513 layout (sessions, 31-32 frames, real sidecars) with tiny "
      "images, validator on", 0, "passes bids-validator-deno; all four sessions run")
def ds004513_validated(tmp: Path) -> Scenario:
    root = _ds004513_with_images(tmp)
    return Scenario(root, validate=True, ran={"sub-s003_ses-closed", "sub-s003_ses-open",
                                              "sub-s007_ses-closed", "sub-s007_ses-open"})


@case("dataset", "validator error: a PET with more frames than its sidecar lists "
      "(ds004513 layout)", 16, "refused before any output; the validator's errors are listed",
      "PET_FRAME_CONSISTENCY_FRAME_DURATION")
def validator_errors(tmp: Path) -> Scenario:
    import numpy as np

    from tests.conftest import blob, write_image

    root = _ds004513_with_images(tmp)
    rel = "sub-s003/ses-open/pet/sub-s003_ses-open_task-rest_pet.nii.gz"
    write_image(root / rel, np.stack([blob()] * 40, -1))
    return Scenario(root, validate=True, file=rel, fix="--skip-bids-validation")


@case("dataset", "the validator crashes or gives no report", 16,
      "refused (was: a traceback); the fix says how to go on",
      "bids-validator-deno did not produce a report")
def validator_crashes(tmp: Path) -> Scenario:
    root = dataset(tmp)

    def broken(dataset):
        raise RuntimeError("bids-validator-deno gave no JSON report: Segmentation fault")

    return Scenario(root, validate=True, file=root.name, fix="--skip-bids-validation",
                    patch={"pseudopet_bids.bids.validator.validation_errors": broken})
