"""End to end: simulate a small cohort, run participant + group, check detection and validity."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from pseudopet_bids.cli.run import main
from tests.conftest import assert_bids_valid, assert_no_fixable_warnings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from pseudopet_bids.simulate.cohort import simulate_cohort

    base = tmp_path_factory.mktemp("e2e")
    bids = base / "bids"
    truth = simulate_cohort(bids, n_controls=1, n_patients=2, seed=3, t1_voxel_mm=1.5)
    out = base / "out"
    # Z < -2.33 (one-sided p = 0.01) instead of the paper's -1.65: with the tissue baseline the
    # paper's threshold leaves about one false cluster per simulated control (docs/detection.md,
    # where both operating points are measured on a 10+10 cohort); this test checks that the
    # pipeline separates lesions from normal variation at an operating point where it can.
    code = main([str(bids), str(out), "participant", "--nprocs", "2", "--omp-nthreads", "1",
                 "--z-threshold", "2.33"])
    return bids, out, truth, code


def test_participant_level_succeeds(cohort):
    bids, out, truth, code = cohort
    assert code == 0
    assert not any(p.name.startswith(".staging") for p in out.iterdir())
    for sub in truth["participant_id"]:
        pet = list((out / sub / "pet").glob("*_space-T1w_stat-z_desc-*_statmap.nii.gz"))
        assert len(pet) == 1
        sidecar = json.loads(pet[0].with_name(pet[0].name.replace(".nii.gz", ".json"))
                             .read_text())
        assert sidecar["Model"] == "tissue" and len(sidecar["ModelSHA256"]) == 64
        assert sidecar["Sources"][0].startswith("bids:raw:")
        # the report says how it was made: the command line of the run, and its errors
        page = (out / f"{sub}.html").read_text()
        assert "participant --nprocs 2 --omp-nthreads 1 --z-threshold 2.33" in page
        assert 'id="errors"' in page and "[@" not in page


def test_lesions_found_in_right_region_and_controls_clean(cohort):
    import nibabel as nib

    bids, out, truth, _ = cohort
    truth_dir = bids.parent / f"{bids.name}_truth"
    for row in truth.itertuples():
        tsv = next((out / row.participant_id / "pet").glob("*_desc-*Focus_clusters.tsv"))
        table = pd.read_csv(tsv, sep="\t")
        if row.group == "patient":
            assert len(table) >= 1, f"{row.participant_id}: lesion not detected"
            assert table["region"].iloc[0] == row.focus, (row.participant_id, table)
            lesion = nib.as_closest_canonical(
                nib.load(truth_dir / f"{row.participant_id}_desc-lesion_mask.nii.gz"))
            focus = nib.load(next((out / row.participant_id / "anat")
                                  .glob("*_desc-*Focus_mask.nii.gz")))
            assert np.allclose(lesion.affine, focus.affine, atol=1e-3)
            overlap = (np.asarray(lesion.dataobj) > 0) & (np.asarray(focus.dataobj) > 0)
            assert overlap.sum() > 0.2 * (np.asarray(lesion.dataobj) > 0).sum()
            # the labelled clusters carry the table's ids, and the focus mask is their union
            dseg = np.asarray(nib.load(next((out / row.participant_id / "anat")
                                            .glob("*_desc-*Focus_dseg.nii.gz"))).dataobj)
            assert sorted(np.unique(dseg[dseg > 0])) == sorted(table["cluster_id"])
            assert ((dseg > 0) == (np.asarray(focus.dataobj) > 0)).all()
            assert (table["n_voxels"] == [int((dseg == k).sum())
                                          for k in table["cluster_id"]]).all()
            # ranked: tier first (high, possible, low), then cluster mass
            order = table["tier"].map({"high": 0, "possible": 1, "low": 2}).tolist()
            assert order == sorted(order)
            assert table["p_method"].str.startswith("random-field").all()  # no calibration
            lobes = pd.read_csv(next((out / row.participant_id / "pet")
                                     .glob("*_desc-*Lobes_asymmetry.tsv")), sep="\t")
            assert len(lobes) == 8
            side = row.focus.split("-")[0]
            other = row.focus.replace(side, "right" if side == "left" else "left")
            ai = lobes.set_index("region")["asymmetry_index"]
            assert ai[row.focus] < 0 < ai[other]
        else:
            assert len(table) == 0, f"{row.participant_id}: control has clusters\n{table}"


def test_group_level(cohort):
    bids, out, truth, _ = cohort
    assert main([str(bids), str(out), "group", "--skip-bids-validation"]) == 0
    summary = pd.read_csv(out / "group" / "summary.tsv", sep="\t").set_index("measure")
    assert summary.loc["detection_rate", "value"] == 1.0
    assert summary.loc["localization_accuracy_top", "value"] == 1.0
    assert summary.loc["false_clusters_per_control", "value"] == 0


def test_outputs_pass_bids_validator(cohort):
    _, out, _, _ = cohort
    assert_bids_valid(out)
    assert_no_fixable_warnings(out)  # README, Description, SpatialReference, ...
    desc = json.loads((out / "dataset_description.json").read_text())
    assert "CodeURL" not in desc["GeneratedBy"][0]  # no public repository: no placeholder
    assert "Container" not in desc["GeneratedBy"][0]  # a venv, not the project's image
    side = next((out / "sub-C01" / "pet").glob("*_desc-preproc_pet.json"))
    assert json.loads(side.read_text())["SkullStripped"] is True  # masked by the brain
    t1w = json.loads((out / "sub-C01" / "anat" / "sub-C01_desc-preproc_T1w.json").read_text())
    assert t1w["SkullStripped"] is False


def test_changed_settings_redo_and_say_why(cohort, caplog, tmp_path):
    bids, out, truth, _ = cohort
    first = truth["participant_id"].iloc[0]
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    assert main([str(bids), str(copy), "participant", "--participant-label", first,
                 "--skip-bids-validation", "--z-threshold", "3"]) == 0
    assert "settings changed since the last run (z_threshold)" in caplog.text


def test_rerun_skips_finished_subjects(cohort, caplog):
    bids, out, truth, _ = cohort
    first = truth["participant_id"].iloc[0]
    z = next((out / first / "pet").glob("*_stat-z_desc-*_statmap.nii.gz"))
    before = z.stat().st_mtime_ns
    assert main([str(bids), str(out), "participant", "--participant-label", first,
                 "--skip-bids-validation", "--z-threshold", "2.33"]) == 0
    assert "skipped, finished with the same settings" in caplog.text
    assert z.stat().st_mtime_ns == before


def test_force_redoes_a_finished_subject_identically(cohort, caplog):
    bids, out, truth, _ = cohort
    first = truth["participant_id"].iloc[0]
    z = next((out / first / "pet").glob("*_stat-z_desc-*_statmap.nii.gz"))
    before = (z.stat().st_mtime_ns, z.read_bytes())
    assert main([str(bids), str(out), "participant", "--participant-label", first,
                 "--skip-bids-validation", "--z-threshold", "2.33", "--force"]) == 0
    assert "redoing, --force given" in caplog.text
    assert "preprocessing reused from" in caplog.text  # the work folder's cache
    assert z.stat().st_mtime_ns != before[0]
    assert z.read_bytes() == before[1]  # same inputs, settings and cache: the same bytes
