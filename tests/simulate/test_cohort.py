"""The BIDS cohort writer: layout, determinism, truth, validity, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from pseudopet_bids import resources
from pseudopet_bids.errors import EXIT_CANNOT_CREATE, EXIT_USAGE, OutputError, UsageError
from pseudopet_bids.simulate import phantom, subject
from pseudopet_bids.simulate.cli import main
from pseudopet_bids.simulate.cohort import model_resolution, simulate_cohort
from pseudopet_bids.simulate.geometry import apply_affine, rotation_matrix
from tests.conftest import assert_bids_valid

from .conftest import SMALL


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _spec(pid: str) -> tuple[subject.SubjectSpec, phantom.HeadModel]:
    head = phantom.head_model(model_resolution(SMALL["t1_voxel_mm"]))
    group = "patient" if pid.startswith("sub-P") else "control"
    spec = subject.draw_subject(pid, group, int(pid[5:]), SMALL["seed"], head,
                                SMALL["t1_voxel_mm"], SMALL["pet_voxel_mm"], SMALL["frames"])
    return spec, head


def test_layout_and_participants(cohort):
    bids, _, table = cohort
    ids = ["sub-C01", "sub-C02", "sub-P01", "sub-P02"]
    assert list(table["participant_id"]) == ids
    for pid in ids:
        assert (bids / pid / "anat" / f"{pid}_T1w.nii.gz").is_file()
        assert (bids / pid / "anat" / f"{pid}_T1w.json").is_file()
        assert (bids / pid / "pet" / f"{pid}_trc-FDG_pet.nii.gz").is_file()
    desc = json.loads((bids / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "raw" and desc["License"] == "CC0"
    assert desc["GeneratedBy"][0]["Name"] == "pseudopet-simulate"
    parts = pd.read_csv(bids / "participants.tsv", sep="\t", keep_default_na=False)
    assert list(parts.columns) == ["participant_id", "group", "focus", "age", "sex"]
    assert list(parts["participant_id"]) == ids
    assert list(parts["group"]) == ["control", "control", "patient", "patient"]
    assert list(parts["focus"][:2]) == ["n/a", "n/a"]
    assert all(f in resources.REGIONS for f in parts["focus"][2:])
    assert list(parts["focus"]) == list(table["focus"])
    assert set(parts["sex"]) <= {"F", "M"} and parts["age"].between(18, 60).all()
    meta = json.loads((bids / "participants.json").read_text())
    assert set(meta) == set(parts.columns)


def test_images_have_documented_types_and_orientations(cohort):
    bids, _, _ = cohort
    t1 = nib.load(bids / "sub-C01" / "anat" / "sub-C01_T1w.nii.gz")
    pet = nib.load(bids / "sub-C01" / "pet" / "sub-C01_trc-FDG_pet.nii.gz")
    assert t1.get_data_dtype() == np.int16 and t1.ndim == 3
    assert np.allclose(t1.header.get_zooms(), 3.0)
    assert pet.get_data_dtype() == np.float32 and pet.shape[3] == SMALL["frames"]
    assert int(t1.header["sform_code"]) == 1 and int(pet.header["qform_code"]) == 1
    # GM in the blurred image reads about 8-15 kBq/mL: the bright brain voxels are in that range.
    data = np.asarray(pet.dataobj).mean(-1)
    bright = data[data > 0.5 * np.percentile(data, 99.9)]
    assert 5e3 < bright.mean() < 2.2e4


def test_truth_is_outside_the_dataset(cohort):
    bids, truth, table = cohort
    assert truth == bids.parent / "bids_truth"
    assert not [p for p in bids.rglob("*") if "truth" in p.name or "lesion" in p.name]
    on_disk = pd.read_csv(truth / "truth.tsv", sep="\t")
    assert list(on_disk.columns) == list(table.columns)
    assert on_disk["lesion_volume_mm3"].isna().sum() == 2  # controls: n/a
    for pid in table["participant_id"]:
        record = json.loads((truth / f"{pid}_truth.json").read_text())
        assert record["participant_id"] == pid
    for pid in ("sub-P01", "sub-P02"):
        mask = nib.load(truth / f"{pid}_desc-lesion_mask.nii.gz")
        t1 = nib.load(bids / pid / "anat" / f"{pid}_T1w.nii.gz")
        assert mask.shape == t1.shape and np.allclose(mask.affine, t1.affine)
        assert np.asarray(mask.dataobj).sum() > 0


def test_lesion_lies_in_the_stated_lobe_grey_matter(cohort):
    bids, truth, table = cohort
    for row in table[table["group"] == "patient"].itertuples():
        assert 0.20 <= row.reduction <= 0.35
        assert row.lesion_volume_mm3 > 500
        label = resources.LOBE_INDEX[row.focus]
        spec, head = _spec(row.participant_id)
        assert spec.lesion is not None and spec.lesion.region == row.focus
        centre = np.array([[row.centre_template_x, row.centre_template_y, row.centre_template_z]])
        ijk = np.rint(head.coarse.grid.to_voxel(centre)[0]).astype(int)
        assert head.lobes[tuple(ijk)] == label and head.coarse.gm[tuple(ijk)] >= 0.5
        # Every lesioned T1w voxel maps back into that lobe's territory.
        mask = nib.load(truth / f"{row.participant_id}_desc-lesion_mask.nii.gz")
        vox = np.argwhere(np.asarray(mask.dataobj) > 0)
        tpl = spec.warp.to_template(apply_affine(mask.affine, vox))
        tv = np.rint(head.coarse.grid.to_voxel(tpl)).astype(int)
        labels = head.coarse.territory[tuple(tv.T)]
        assert (labels == label).mean() > 0.95, np.unique(labels, return_counts=True)
        # The PET uptake falls by the stated fraction in pure lesioned GM.
        weight = phantom.lesion_weight(head.coarse, spec.lesion)
        args = (head, spec.anatomy, spec.gm_base, spec.wm_ratio)
        with_lesion = phantom.pet_template(*args, 1.0, weight, spec.lesion.reduction)
        without = phantom.pet_template(*args)
        core = (weight > 0.99) & (head.coarse.gm > 0.95)
        if core.any():
            ratio = with_lesion[core] / without[core]
            assert np.allclose(ratio, 1.0 - spec.lesion.reduction, atol=0.02)


def test_pet_to_t1_offset_is_rigid_bounded_and_real(cohort):
    bids, truth, table = cohort
    for pid in table["participant_id"]:
        rec = json.loads((truth / f"{pid}_truth.json").read_text())["pet"]["pet_to_t1w"]
        m = np.array(rec["matrix"])
        assert np.allclose(m[:3, :3].T @ m[:3, :3], np.eye(3), atol=1e-9)
        assert np.isclose(np.linalg.det(m[:3, :3]), 1.0)
        assert np.all(np.abs(rec["rotation_deg"]) <= 5)
        assert np.all(np.abs(rec["translation_mm"]) <= 10)
        assert np.allclose(m[:3, :3], rotation_matrix(rec["rotation_deg"]))
        # The PET content really sits where the matrix says: the bright brain's centroid in PET
        # header mm, moved by the matrix, lands on the T1w's brain centroid.
        spec, head = _spec(pid)
        pet = nib.load(bids / pid / "pet" / f"{pid}_trc-FDG_pet.nii.gz")
        data = np.asarray(pet.dataobj).mean(-1)
        vox = np.argwhere(data > 0.4 * np.percentile(data, 99.5))
        c_pet = apply_affine(m, apply_affine(pet.affine, vox)).mean(0)
        brain = phantom.render(head.fine, (head.fine.gm + head.fine.wm)[None], spec.t1_grid,
                               spec.warp)[0]
        c_t1 = apply_affine(spec.t1_grid.affine, np.argwhere(brain > 0.5)).mean(0)
        assert np.linalg.norm(c_pet - c_t1) < 6.0
        naive = apply_affine(pet.affine, vox).mean(0)  # ignoring the offset is measurably wrong
        if np.linalg.norm(m[:3, 3]) > 8:
            assert np.linalg.norm(naive - c_t1) > np.linalg.norm(c_pet - c_t1)


def test_frames_sidecar_and_weighted_mean(cohort):
    bids, _, _ = cohort
    meta = json.loads((bids / "sub-P01" / "pet" / "sub-P01_trc-FDG_pet.json").read_text())
    d = np.array(meta["FrameDuration"])
    s = np.array(meta["FrameTimesStart"])
    assert len(d) == len(s) == SMALL["frames"]
    assert s[0] == meta["ScanStart"] and np.allclose(s[1:], s[:-1] + d[:-1])
    for key in ("TracerName", "TracerRadionuclide", "InjectedRadioactivity", "InjectedMass",
                "SpecificRadioactivity", "ModeOfAdministration", "TimeZero", "InjectionStart",
                "AcquisitionMode", "ImageDecayCorrected", "ImageDecayCorrectionTime",
                "ReconMethodName", "ReconFilterType", "AttenuationCorrection", "Units"):
        assert key in meta
    assert meta["Units"] == "Bq/mL" and meta["TracerName"] == "FDG"
    # The duration-weighted mean of the frames is the static image of a 1-frame run.
    spec, head = _spec("sub-P01")
    from dataclasses import replace

    static = subject.render_subject(replace(spec, durations=np.array([600.0])), head).pet
    frames = np.asarray(nib.load(bids / "sub-P01" / "pet" / "sub-P01_trc-FDG_pet.nii.gz").dataobj)
    mean = (frames * d).sum(-1) / d.sum()
    ref = np.asarray(static.dataobj)
    assert np.allclose(mean, ref, rtol=1e-5, atol=1e-3 * ref.max())
    assert not np.allclose(frames[..., 0], frames[..., -1])


def test_same_seed_gives_identical_bytes_other_seed_differs(cohort, tmp_path):
    bids, truth, _ = cohort
    again = tmp_path / "again"
    simulate_cohort(again, **SMALL)
    assert _files(again) == _files(bids)
    truth_again = _files(tmp_path / "again_truth")
    assert truth_again.pop("README.md") != b""  # names the dataset folder, which differs
    assert truth_again == {k: v for k, v in _files(truth).items() if k != "README.md"}
    other = tmp_path / "other"
    simulate_cohort(other, **{**SMALL, "seed": SMALL["seed"] + 1, "n_patients": 0,
                              "n_controls": 1})
    name = "sub-C01/anat/sub-C01_T1w.nii.gz"
    assert (other / name).read_bytes() != (bids / name).read_bytes()


def test_bids_validator_reports_no_errors(cohort):
    bids, _, _ = cohort
    assert_bids_valid(bids)


def test_refuses_non_empty_output(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(OutputError, match="not empty"):
        simulate_cohort(out, 1, 0, seed=1, t1_voxel_mm=3.0)
    assert main([str(out), "--controls", "1", "--seed", "1"]) == EXIT_CANNOT_CREATE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing else written
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_usage_errors(tmp_path):
    with pytest.raises(UsageError):
        simulate_cohort(tmp_path / "a", 0, 0, seed=1)
    with pytest.raises(UsageError):
        simulate_cohort(tmp_path / "a", 1, 0, seed=1, truth_dir=tmp_path / "a" / "truth")
    assert main([str(tmp_path / "b"), "--controls", "1"]) == EXIT_USAGE  # --seed missing
    assert main([str(tmp_path / "b"), "--controls", "-1", "--seed", "1"]) == EXIT_USAGE
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_writes_a_cohort_with_custom_truth_dir(tmp_path):
    (tmp_path / "ds").mkdir()  # an existing empty folder is fine
    code = main([str(tmp_path / "ds"), "--controls", "1", "--patients", "1", "--seed", "3",
                 "--t1-voxel-size", "3", "--pet-voxel-size", "4", "--truth-dir",
                 str(tmp_path / "gt"), "-q"])
    assert code == 0
    assert (tmp_path / "gt" / "truth.tsv").is_file()
    assert (tmp_path / "gt" / "sub-P01_desc-lesion_mask.nii.gz").is_file()
    assert not (tmp_path / "ds_truth").exists()
    pet = nib.load(tmp_path / "ds" / "sub-C01" / "pet" / "sub-C01_trc-FDG_pet.nii.gz")
    assert pet.ndim == 3 and np.allclose(pet.header.get_zooms(), 4.0)
