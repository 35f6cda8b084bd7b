import math

import pandas as pd
import pytest

from pseudopet_bids.bids.participants import Participant
from pseudopet_bids.errors import InputError
from pseudopet_bids.evaluate.group import aggregate, subject_row, wilson_interval


def test_wilson_known_values():
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def _table(path, regions, tiers=None, z_mass=None, cluster_id=None):
    """A cluster table; without ``tiers``/``z_mass`` it is one of an older version."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame({"cluster_id": cluster_id or range(1, len(regions) + 1),
                          "region": regions, "volume_mm3": [2000.0] * len(regions)})
    if tiers is not None:
        table["tier"] = tiers
    if z_mass is not None:
        table["z_mass"] = z_mass
    table.to_csv(path, sep="\t", index=False)


def test_aggregate(tmp_path):
    _table(tmp_path / "sub-P1/pet/sub-P1_trc-FDG_space-T1w_desc-tissueFocus_clusters.tsv",
           ["left-temporal", "right-frontal"])
    _table(tmp_path / "sub-P2/pet/sub-P2_trc-FDG_space-T1w_desc-tissueFocus_clusters.tsv",
           ["left-parietal", "right-occipital"])
    _table(tmp_path / "sub-P3/pet/sub-P3_trc-FDG_space-T1w_desc-tissueFocus_clusters.tsv", [])
    _table(tmp_path / "sub-C1/pet/sub-C1_trc-FDG_space-T1w_desc-tissueFocus_clusters.tsv",
           ["other"])
    parts = {"P1": Participant("P1", "patient", ("left-temporal",)),
             "P2": Participant("P2", "patient", ("right-occipital",)),
             "P3": Participant("P3", "patient", ("left-frontal",)),
             "C1": Participant("C1", "control")}
    summary = aggregate(tmp_path, parts).set_index("measure")
    assert summary.loc["detection_rate", "value"] == pytest.approx(2 / 3)
    assert summary.loc["localization_accuracy_top", "value"] == pytest.approx(1 / 2)
    assert summary.loc["localization_accuracy_any", "value"] == pytest.approx(1.0)
    assert summary.loc["false_clusters_per_control", "value"] == 1
    assert (tmp_path / "group/subjects.tsv").exists()
    # tables without tiers: the tier measures are unknown, not zero
    assert math.isnan(summary.loc["patients_with_high_tier_in_focus", "value"])
    assert math.isnan(summary.loc["high_tier_clusters_per_control", "value"])
    # …but the top-ranked cluster is known: P1 hit, P2 missed, P3 undetected
    assert summary.loc["localization_top_all_patients", "value"] == pytest.approx(1 / 3)


def test_aggregate_nothing(tmp_path):
    with pytest.raises(InputError, match="run the participant level first"):
        aggregate(tmp_path, {})


def test_several_analyses_are_summarized_side_by_side(tmp_path):
    base = "sub-{s}/pet/sub-{s}_trc-FDG_space-T1w_desc-{a}Focus_clusters.tsv"
    _table(tmp_path / base.format(s="P1", a="cyclegan"), ["left-temporal"])
    _table(tmp_path / base.format(s="P1", a="cycleganNorm"), [])
    _table(tmp_path / base.format(s="C1", a="cyclegan"), ["right-frontal", "other"])
    _table(tmp_path / base.format(s="C1", a="cycleganNorm"), [])
    parts = {"P1": Participant("P1", "patient", ("left-temporal",)),
             "C1": Participant("C1", "control")}
    summary = aggregate(tmp_path, parts)
    table = summary.set_index(["analysis", "measure"])["value"]
    assert table["cyclegan", "detection_rate"] == 1.0
    assert table["cycleganNorm", "detection_rate"] == 0.0
    assert table["cyclegan", "false_clusters_per_control"] == 2
    assert table["cycleganNorm", "false_clusters_per_control"] == 0
    assert set(summary.loc[summary["analysis"] == "cycleganNorm", "z_reference"]) == {"controls"}
    assert set(summary["model"]) == {"cyclegan"}
    lobes = pd.read_csv(tmp_path / "group" / "lobes.tsv", sep="\t")
    row = lobes[(lobes["analysis"] == "cyclegan") & (lobes["region"] == "left-temporal")].iloc[0]
    assert row["patients_with_focus"] == 1 and row["detected"] == 1 and row["localized_any"] == 1
    ctrl = lobes[(lobes["analysis"] == "cyclegan") & (lobes["region"] == "right-frontal")]
    assert ctrl["controls_with_cluster_here"].iloc[0] == 1
    assert len(lobes) == 2 * 9  # eight lobes and "other"


def test_zero_patients_zero_controls_and_unknown_focus(tmp_path):
    base = "sub-{s}/pet/sub-{s}_trc-FDG_space-T1w_desc-tissueFocus_clusters.tsv"
    _table(tmp_path / base.format(s="C1"), [])
    only_controls = aggregate(tmp_path, {"C1": Participant("C1", "control")}).set_index("measure")
    assert only_controls.loc["detection_rate", "n"] == 0
    assert math.isnan(only_controls.loc["detection_rate", "value"])
    assert only_controls.loc["false_clusters_per_control", "value"] == 0
    _table(tmp_path / base.format(s="P1"), ["left-frontal"])
    _table(tmp_path / base.format(s="P2"), ["left-frontal"])
    parts = {"P1": Participant("P1", "patient", ()),  # focus n/a
             "P2": Participant("P2", "patient", ("left-frontal",))}
    summary = aggregate(tmp_path, parts, labels=["P1", "P2"]).set_index("measure")
    assert summary.loc["detection_rate", "value"] == 1.0
    # the patient without a known focus counts for detection, not for localization
    assert summary.loc["localization_accuracy_any", "n"] == 1
    assert summary.loc["controls_with_clusters", "n"] == 0
    assert math.isnan(summary.loc["false_clusters_per_control", "value"])
    subjects = pd.read_csv(tmp_path / "group" / "subjects.tsv", sep="\t")
    assert subjects.set_index("participant_id").loc["sub-P1", "focus"] == "n/a" or \
        pd.isna(subjects.set_index("participant_id").loc["sub-P1", "focus"])


def test_subject_row_top_ranked_and_tiers():
    info = Participant("P1", "patient", ("left-temporal",))
    row = subject_row(info, None, ["left-frontal", "left-temporal"], ["high", "possible"])
    assert row["top_region"] == "left-frontal" and row["top_tier"] == "high"
    assert row["localized_top"] is False and row["localized_any"] is True
    assert row["n_high"] == 1 and row["localized_high"] is False
    # the benchmarks' call without tiers: tier fields unknown, the rest unchanged
    row = subject_row(info, None, ["left-temporal"])
    assert row["top_tier"] == "n/a" and row["n_high"] is None and row["localized_high"] is None
    assert row["localized_top"] is True
    empty = subject_row(Participant("C1", "control"), "1", [])
    assert empty["n_high"] == 0 and empty["top_region"] == "n/a" and empty["session"] == "1"
    with pytest.raises(ValueError, match="tiers"):
        subject_row(info, None, ["left-temporal"], ["high", "low"])


def test_aggregate_tiers_top_ranked_and_froc_tables(tmp_path):
    base = "sub-{s}/pet/sub-{s}_trc-FDG_space-T1w_desc-tissueFocus_clusters.tsv"
    # P1's rows are stored out of order: cluster_id 1 (the top-ranked) is the second row
    _table(tmp_path / base.format(s="P1"), ["left-temporal", "left-frontal"],
           ["possible", "high"], [300.0, 500.0], cluster_id=[2, 1])
    _table(tmp_path / base.format(s="P2"), ["right-occipital"], ["high"], [900.0])
    _table(tmp_path / base.format(s="P3"), [], [], [])
    _table(tmp_path / base.format(s="C1"), ["other", "right-frontal"], ["high", "low"],
           [400.0, 50.0])
    _table(tmp_path / base.format(s="C2"), [], [], [])
    parts = {"P1": Participant("P1", "patient", ("left-temporal",)),
             "P2": Participant("P2", "patient", ("right-occipital",)),
             "P3": Participant("P3", "patient", ("left-frontal",)),
             "C1": Participant("C1", "control"), "C2": Participant("C2", "control")}
    summary = aggregate(tmp_path, parts).set_index("measure")
    value = summary["value"]
    assert value["detection_rate"] == pytest.approx(2 / 3)
    assert value["localization_accuracy_top"] == pytest.approx(1 / 2)  # P1's top: frontal
    assert value["localization_accuracy_any"] == 1.0
    assert value["localization_top_all_patients"] == pytest.approx(1 / 3)
    assert summary.loc["localization_top_all_patients", "n"] == 3
    assert value["patients_with_high_tier_in_focus"] == pytest.approx(1 / 3)  # P2 only
    lo, hi = wilson_interval(1, 3)
    assert summary.loc["patients_with_high_tier_in_focus", "ci95_low"] == pytest.approx(lo)
    assert summary.loc["patients_with_high_tier_in_focus", "ci95_high"] == pytest.approx(hi)
    assert value["high_tier_clusters_per_control"] == pytest.approx(1 / 2)
    assert value["false_clusters_per_control"] == pytest.approx(1.0)

    group = tmp_path / "group"
    subjects = pd.read_csv(group / "subjects.tsv", sep="\t").set_index("participant_id")
    assert subjects.loc["sub-P1", "top_region"] == "left-frontal"
    assert subjects.loc["sub-P1", "top_tier"] == "high"
    assert subjects.loc["sub-C1", "n_high"] == 1 and subjects.loc["sub-C2", "n_high"] == 0
    lobes = pd.read_csv(group / "lobes.tsv", sep="\t").set_index("region")
    assert lobes.loc["left-temporal", "localized_top"] == 0
    assert lobes.loc["left-temporal", "localized_any"] == 1

    froc = pd.read_csv(group / "froc.tsv", sep="\t")
    # in-focus strengths P1 300, P2 900, P3 none; control clusters 400 and 50 over 2 controls
    assert list(froc["threshold"]) == [math.inf, 900, 400, 300, 50]
    assert list(froc["patients_hit"]) == [0, 1, 1, 2, 2]
    assert list(froc["false_clusters_per_control"]) == [0, 0, 0.5, 0.5, 1.0]
    assert set(froc["n_patients"]) == {3} and set(froc["n_controls"]) == {2}
    points = pd.read_csv(group / "froc_points.tsv", sep="\t").set_index("rule")
    assert points.loc["high", "patients_hit"] == 1  # P1's high cluster is not in the focus
    assert points.loc["high+possible", "patients_hit"] == 2
    assert points.loc["high", "false_clusters_per_control"] == 0.5
    ctrl = pd.read_csv(group / "control_clusters.tsv", sep="\t")
    assert len(ctrl) == 2 and set(ctrl["participant_id"]) == {"sub-C1"}
    assert sorted(ctrl["tier"]) == ["high", "low"]
    assert {"peak_template_x_mm", "volume_mm3", "region", "analysis"} <= set(ctrl.columns)


def test_aggregate_older_tables_give_empty_froc(tmp_path, caplog):
    base = "sub-{s}/pet/sub-{s}_trc-FDG_space-T1w_desc-tissueFocus_clusters.tsv"
    _table(tmp_path / base.format(s="P1"), ["left-temporal"])
    _table(tmp_path / base.format(s="C1"), ["other"])
    parts = {"P1": Participant("P1", "patient", ("left-temporal",)),
             "C1": Participant("C1", "control")}
    with caplog.at_level("INFO", logger="pseudopet_bids.evaluate.group"):
        aggregate(tmp_path, parts)
    assert "FROC of tissue skipped" in caplog.text and "z_mass" in caplog.text
    assert "tier operating points of tissue skipped" in caplog.text
    for name in ("froc", "froc_points"):
        table = pd.read_csv(tmp_path / "group" / f"{name}.tsv", sep="\t")
        assert table.empty and "sensitivity" in table.columns
    ctrl = pd.read_csv(tmp_path / "group" / "control_clusters.tsv", sep="\t")
    assert len(ctrl) == 1 and ctrl["tier"].isna().all()
