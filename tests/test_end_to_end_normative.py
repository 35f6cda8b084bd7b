"""End to end: both Z references side by side in one output folder, and the group evaluation.

participant (paper's rule) → group --build-normative → participant --z-reference controls →
group (summary per analysis, translation tables, reports, citation).
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from pseudopet_bids.cli.run import main
from pseudopet_bids.detect import normative
from tests.conftest import assert_bids_valid

pytestmark = pytest.mark.slow
FAST = ["--skip-bids-validation", "--omp-nthreads", "1", "--nprocs", "2"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """4 controls (leave-one-out keeps 3 per control) + 1 patient, 2 mm T1w."""
    from pseudopet_bids.simulate.cohort import simulate_cohort

    base = tmp_path_factory.mktemp("e2e_norm")
    bids = base / "bids"
    truth = simulate_cohort(bids, n_controls=4, n_patients=1, seed=11, t1_voxel_mm=2.0)
    out = base / "out"
    codes = {"subject": main([str(bids), str(out), "participant", *FAST])}
    return bids, out, truth, codes


def test_controls_reference_needs_a_normative_model_first(cohort, tmp_path):
    bids, out, _, codes = cohort
    assert codes["subject"] == 0
    fresh = tmp_path / "fresh"
    assert main([str(bids), str(fresh), "participant", "--z-reference", "controls",
                 *FAST]) == 64
    assert not fresh.exists()  # refused before anything was written


def test_build_normative_then_score_against_controls(cohort):
    bids, out, truth, _ = cohort
    assert main([str(bids), str(out), "group", "--build-normative", *FAST]) == 0
    folder = out / "models" / normative.folder_name("tissue")
    card = json.loads((folder / normative.NORMATIVE_CARD).read_text())
    assert card["n_controls"] == 4 and card["model"] == "tissue"
    assert sorted(card["controls"]) == [f"sub-C0{i}" for i in range(1, 5)]
    assert main([str(bids), str(out), "participant", "--z-reference", "controls", *FAST]) == 0
    for row in truth.itertuples():
        pet = out / row.participant_id / "pet"
        assert len(list(pet.glob("*_stat-z_desc-tissue_statmap.nii.gz"))) == 1
        zfile = next(pet.glob("*_stat-z_desc-tissueNorm_statmap.nii.gz"))
        side = json.loads(zfile.with_name(zfile.name.replace(".nii.gz", ".json")).read_text())
        assert side["ZReference"].startswith("healthy-control normative model")
        assert side["LeaveOneOut"] is (row.group == "control")
        assert side["NormativeControls"] == (3 if row.group == "control" else 4)
        assert side["NormativeSHA256"] == card["sha256"]
        assert list(pet.glob("*_desc-tissueNormFocus_clusters.tsv"))
        # the pseudo-normal PET is shared by both analyses: written once per model
        assert len(list(pet.glob("*_desc-tissuePseudonormal_pet.nii.gz"))) == 1


def test_rerun_skips_each_finished_analysis(cohort, caplog):
    bids, out, truth, _ = cohort
    first = truth["participant_id"].iloc[0]
    for ref in ("subject", "controls"):
        assert main([str(bids), str(out), "participant", "--participant-label", first,
                     "--z-reference", ref, *FAST]) == 0
    # the normative build stored the controls' asymmetry maps after the paper's-rule run: that
    # analysis is redone once to judge its clusters with them, then both are finished
    assert "settings changed since the last run (calibration_sha256)" in caplog.text
    caplog.clear()
    for ref in ("subject", "controls"):
        assert main([str(bids), str(out), "participant", "--participant-label", first,
                     "--z-reference", ref, *FAST]) == 0
    assert caplog.text.count("skipped, finished with the same settings") == 2


def test_group_compares_both_references(cohort):
    bids, out, truth, _ = cohort
    # the tissue baseline's translation metrics are opt-in (--translation-metrics all)
    assert main([str(bids), str(out), "group", "--translation-metrics", "all", *FAST]) == 0
    summary = pd.read_csv(out / "group" / "summary.tsv", sep="\t")
    assert set(summary["analysis"]) == {"tissue", "tissueNorm"}
    assert set(summary["z_reference"]) == {"subject", "controls"}
    per = summary.set_index(["analysis", "measure"])
    for analysis in ("tissue", "tissueNorm"):
        assert per.loc[(analysis, "detection_rate"), "n"] == 1
        assert per.loc[(analysis, "false_clusters_per_control"), "n"] == 4
    translation = pd.read_csv(out / "group" / "translation.tsv", sep="\t")
    assert sorted(translation["participant_id"]) == [f"sub-C0{i}" for i in range(1, 5)]
    assert (translation["ssim_brain"] > 0.5).all()
    assert {"lobes.tsv", "subjects.tsv", "spectra.tsv", "translation_summary.tsv",
            "group.html"} <= {p.name for p in (out / "group").iterdir()}


def test_reports_cover_both_analyses_without_broken_links(cohort):
    from pseudopet_bids.reports.html import check_links

    _, out, truth, _ = cohort
    group_page = out / "group" / "group.html"
    assert "tissueNorm" in group_page.read_text() and check_links(group_page) == []
    for sub in truth["participant_id"]:
        page = out / f"{sub}.html"
        text = page.read_text()
        assert "tissueNorm" in text and "normative" in text.lower()
        assert check_links(page) == []
        figures = list((out / sub / "figures").glob("*.png"))
        assert {f.name.split("_desc-")[-1] for f in figures} >= {
            "segmentation.png", "templatereg.png", "coregistration.png", "tissuePet.png",
            "tissueZmap.png", "tissueNormZmap.png"}
    citation = (out / "logs" / "CITATION.md").read_text()
    assert "normative" in citation.lower() and (out / "logs" / "CITATION.bib").exists()


def test_outputs_with_both_references_pass_bids_validator(cohort):
    _, out, _, _ = cohort
    assert_bids_valid(out)


def test_stale_normative_model_is_refused(cohort, tmp_path):
    bids, out, _, _ = cohort
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    card_path = copy / "models" / normative.folder_name("tissue") / normative.NORMATIVE_CARD
    card = json.loads(card_path.read_text())
    card["model_sha256"] = "0" * 64
    card_path.write_text(json.dumps(card))
    assert main([str(bids), str(copy), "participant", "--z-reference", "controls", *FAST]) == 64
